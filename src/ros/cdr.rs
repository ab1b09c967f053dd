//! Serialised ROS 2 messages as rosbag2 and Foxglove store them: a 4-byte CDR encapsulation
//! header (little-endian plain CDR: `00 01 00 00`) followed by the CDR of the message, the same
//! bytes the DDS middleware carries.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Encapsulation header of little-endian plain CDR (`CDR_LE`).
pub const CDR_LE_HEADER: [u8; 4] = [0x00, 0x01, 0x00, 0x00];

/// A message that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CdrError {
    /// The message could not be serialised (a bug).
    #[error("cannot encode the message as CDR: {0}")]
    Encode(String),
    /// The payload is shorter than the encapsulation header, or not little/big-endian CDR.
    #[error("not a CDR payload: {0}")]
    Header(String),
    /// The payload does not decode as the expected type.
    #[error("malformed CDR payload: {0}")]
    Decode(String),
}

/// Encapsulation header + CDR of `msg`.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CdrError> {
    let mut out = CDR_LE_HEADER.to_vec();
    cdr_encoding::to_writer::<T, byteorder::LittleEndian, _>(&mut out, msg)
        .map_err(|e| CdrError::Encode(e.to_string()))?;
    Ok(out)
}

/// The message in an encapsulated CDR payload (little- or big-endian plain CDR).
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CdrError> {
    if payload.len() < 4 {
        return Err(CdrError::Header(format!(
            "{} bytes, fewer than the 4-byte encapsulation header",
            payload.len()
        )));
    }
    let body = &payload[4..];
    let decoded = match (payload[0], payload[1]) {
        (0x00, 0x01) => cdr_encoding::from_bytes::<T, byteorder::LittleEndian>(body),
        (0x00, 0x00) => cdr_encoding::from_bytes::<T, byteorder::BigEndian>(body),
        (a, b) => {
            return Err(CdrError::Header(format!(
                "encapsulation kind {a:02x} {b:02x} is not plain CDR"
            )))
        }
    };
    decoded
        .map(|(msg, _)| msg)
        .map_err(|e| CdrError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ros::msg::{Header, Image, Time};

    #[test]
    fn image_round_trips_with_header() {
        let img = Image::from_u8(
            Header {
                stamp: Time { sec: 5, nanosec: 7 },
                frame_id: "cam".into(),
            },
            2,
            1,
            "rgb8",
            3,
            vec![1, 2, 3, 4, 5, 6],
        );
        let bytes = encode(&img).unwrap();
        assert_eq!(&bytes[..4], &CDR_LE_HEADER);
        // sec, nanosec, then the frame_id length (4 with the NUL) and "cam\0".
        assert_eq!(&bytes[4..16], &[5, 0, 0, 0, 7, 0, 0, 0, 4, 0, 0, 0]);
        let back: Image = decode(&bytes).unwrap();
        assert_eq!(back, img);
    }

    #[test]
    fn short_or_foreign_payloads_are_errors() {
        assert!(matches!(decode::<Image>(&[0, 1]), Err(CdrError::Header(_))));
        assert!(matches!(
            decode::<Image>(&[0, 3, 0, 0, 1]),
            Err(CdrError::Header(_))
        ));
        assert!(matches!(
            decode::<Image>(&[0, 1, 0, 0, 1, 2]),
            Err(CdrError::Decode(_))
        ));
    }
}
