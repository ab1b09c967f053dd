//! [`Undistorter`]: undistortion (and rectification) maps computed once per calibration, like
//! OpenCV `initUndistortRectifyMap`, stored in fixed point, and the bilinear remap that applies
//! them without allocating.

use std::path::PathBuf;

use nalgebra::{Matrix3, Vector3};

use super::camera::{check_buffer_len, CalibrationError, CameraCalibration};

/// Fractional bits of the undistortion map: source positions in 1/256 pixel.
const MAP_FRACTION_BITS: u32 = 8;
/// 1.0 in map fixed point.
const MAP_ONE: u32 = 1 << MAP_FRACTION_BITS;
/// Map entry offset that marks an output pixel whose source lies outside the raw image.
const MAP_OUTSIDE: u32 = u32::MAX;

/// One output pixel of the undistortion map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MapEntry {
    /// Byte offset of the top-left source pixel, or [`MAP_OUTSIDE`].
    offset: u32,
    /// Weight of the right column, 0..=[`MAP_ONE`].
    wx: u16,
    /// Weight of the lower row, 0..=[`MAP_ONE`].
    wy: u16,
}

/// Undistorts (and rectifies) packed RGB8 images with maps computed once, like OpenCV's
/// `initUndistortRectifyMap` + `remap` (bilinear): output pixel `(u, v)` of the rectified image
/// (intrinsics from `P`, rotation `R`) samples the raw image where the camera model puts its ray.
/// Output pixels whose source lies outside the raw image are black.
#[derive(Debug, Clone)]
pub struct Undistorter {
    width: usize,
    height: usize,
    origin: PathBuf,
    /// Byte step to the right neighbour (0 for a one-column image).
    step_x: u32,
    /// Byte step to the lower neighbour (0 for a one-row image).
    step_y: u32,
    map: Vec<MapEntry>,
}

impl Undistorter {
    /// Compute the maps for the calibration's image size.
    pub fn new(cal: &CameraCalibration) -> Self {
        let (width, height) = (cal.width(), cal.height());
        let lens = cal.lens();
        let k = cal.intrinsics();
        let rect = cal.rectified_intrinsics();
        // R maps the camera frame to the rectified frame; output rays go back with Rᵀ.
        let r_t = Matrix3::from_row_slice(&cal.r).transpose();
        let mut map = Vec::with_capacity(width * height);
        for v in 0..height {
            for u in 0..width {
                let ray = r_t
                    * Vector3::new(
                        (u as f64 - rect.cx) / rect.fx,
                        (v as f64 - rect.cy) / rect.fy,
                        1.0,
                    );
                let entry = if ray.z > 0.0 {
                    let (xd, yd) = lens.distort(ray.x / ray.z, ray.y / ray.z);
                    map_entry(k.fx * xd + k.cx, k.fy * yd + k.cy, width, height)
                } else {
                    None
                };
                map.push(entry.unwrap_or(MapEntry {
                    offset: MAP_OUTSIDE,
                    wx: 0,
                    wy: 0,
                }));
            }
        }
        Undistorter {
            width,
            height,
            origin: cal.origin.clone(),
            step_x: if width > 1 { 3 } else { 0 },
            // Fits: width <= MAX_IMAGE_SIDE.
            step_y: if height > 1 { (width * 3) as u32 } else { 0 },
            map,
        }
    }

    /// Image width, pixels (input and output).
    pub fn width(&self) -> usize {
        self.width
    }

    /// Image height, pixels (input and output).
    pub fn height(&self) -> usize {
        self.height
    }

    /// Where output pixel `(u, v)` samples the raw image (as stored, to 1/256 px), or `None` if
    /// outside the raw image (or `(u, v)` outside the output).
    pub fn source_of(&self, u: usize, v: usize) -> Option<(f32, f32)> {
        if u >= self.width || v >= self.height {
            return None;
        }
        let e = self.map.get(v * self.width + u)?;
        if e.offset == MAP_OUTSIDE {
            return None;
        }
        let pixel = e.offset as usize / 3;
        let one = MAP_ONE as f32;
        Some((
            (pixel % self.width) as f32 + e.wx as f32 / one,
            (pixel / self.width) as f32 + e.wy as f32 / one,
        ))
    }

    /// Fraction of output pixels that see the raw image.
    pub fn coverage(&self) -> f64 {
        let inside = self.map.iter().filter(|e| e.offset != MAP_OUTSIDE).count();
        inside as f64 / self.map.len().max(1) as f64
    }

    /// Undistort `src_rgb` (raw image, packed RGB8, `width * height * 3` bytes) into `dst_rgb`
    /// (same size). Fails only on a buffer of the wrong length.
    pub fn apply(&self, src_rgb: &[u8], dst_rgb: &mut [u8]) -> Result<(), CalibrationError> {
        let expected = self.width * self.height * 3;
        for (what, len) in [
            ("source image", src_rgb.len()),
            ("output image", dst_rgb.len()),
        ] {
            check_buffer_len(&self.origin, (self.width, self.height), what, len, expected)?;
        }
        // The right-neighbour step as a constant lets the compiler drop the bounds checks
        // inside each 2x2 neighbourhood.
        if self.step_x == 3 {
            remap::<3>(&self.map, self.step_y as usize, src_rgb, dst_rgb);
        } else {
            remap::<0>(&self.map, self.step_y as usize, src_rgb, dst_rgb);
        }
        Ok(())
    }
}

/// Bilinear remap of packed RGB8 by `map`; `SX` and `sy` are the byte steps to the right and
/// lower neighbours (0 where the image is one pixel wide or high).
fn remap<const SX: usize>(map: &[MapEntry], sy: usize, src: &[u8], dst: &mut [u8]) {
    for (e, out) in map.iter().zip(dst.chunks_exact_mut(3)) {
        let o = e.offset as usize;
        // Offsets were built inside the image (see `map_entry`); MAP_OUTSIDE, or anything that
        // is not there, reads as black.
        let neighbours = (e.offset != MAP_OUTSIDE)
            .then(|| Some((src.get(o..o + SX + 3)?, src.get(o + sy..o + sy + SX + 3)?)))
            .flatten();
        let Some((top, bottom)) = neighbours else {
            out.fill(0);
            continue;
        };
        let (wx, wy) = (u32::from(e.wx), u32::from(e.wy));
        let w00 = (MAP_ONE - wx) * (MAP_ONE - wy);
        let w01 = wx * (MAP_ONE - wy);
        let w10 = (MAP_ONE - wx) * wy;
        let w11 = wx * wy;
        for c in 0..3 {
            let sum = u32::from(top[c]) * w00
                + u32::from(top[SX + c]) * w01
                + u32::from(bottom[c]) * w10
                + u32::from(bottom[SX + c]) * w11;
            // The weights sum to MAP_ONE², so this rounds to nearest.
            out[c] = ((sum + (1 << (2 * MAP_FRACTION_BITS - 1))) >> (2 * MAP_FRACTION_BITS)) as u8;
        }
    }
}

/// The map entry sampling raw image point `(us, vs)`, or `None` outside `[0, size - 1]`.
fn map_entry(us: f64, vs: f64, width: usize, height: usize) -> Option<MapEntry> {
    let one = MAP_ONE as f64;
    let (qx, qy) = ((us * one).round(), (vs * one).round());
    let (max_x, max_y) = ((width - 1) as f64 * one, (height - 1) as f64 * one);
    if !(0.0..=max_x).contains(&qx) || !(0.0..=max_y).contains(&qy) {
        return None;
    }
    let (qx, qy) = (qx as u32, qy as u32);
    let split = |q: u32, size: usize| {
        let (mut i, mut w) = (q >> MAP_FRACTION_BITS, q & (MAP_ONE - 1));
        // On the last column / row, use the previous one with full weight on this one, so the
        // bilinear neighbours stay inside the image.
        if i as usize == size - 1 && size > 1 {
            i -= 1;
            w = MAP_ONE;
        }
        (i as usize, w as u16)
    };
    let (ix, wx) = split(qx, width);
    let (iy, wy) = split(qy, height);
    Some(MapEntry {
        offset: ((iy * width + ix) * 3) as u32,
        wx,
        wy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_entry_keeps_neighbours_inside() {
        let e = map_entry(9.0, 4.0, 10, 5).expect("inside");
        // Last column and row: the previous pixel with full weight on the last.
        assert_eq!(
            (e.offset, e.wx, e.wy),
            (((3 * 10 + 8) * 3) as u32, 256, 256)
        );
        assert!(map_entry(9.003, 0.0, 10, 5).is_none());
        assert!(map_entry(-0.003, 0.0, 10, 5).is_none());
        // Rounds up into the next pixel.
        let e = map_entry(2.9999999, 1.0, 10, 5).expect("inside");
        assert_eq!((e.offset, e.wx, e.wy), (((10 + 3) * 3) as u32, 0, 0));
    }
}
