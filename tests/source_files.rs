//! The directory source: order, looping, skipping corrupt files, and the errors for bad folders.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is how a test fails"
)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dinov3_perception::frame::{Clock, Stamp};
use dinov3_perception::source::files::{list_images, FilesConfig, FilesSource};
use dinov3_perception::source::{FrameSource, SourceError};

mod support;
use support::clock::ManualClock;

const T0: u64 = 1_700_000_000_000_000_000;

/// Write an image whose width identifies it (height 3, solid colour).
fn write_image(dir: &Path, name: &str, width: u32) {
    let img = image::RgbImage::from_pixel(width, 3, image::Rgb([200, 40, 10]));
    let format = if name.to_ascii_lowercase().ends_with(".png") {
        image::ImageFormat::Png
    } else {
        image::ImageFormat::Jpeg
    };
    img.save_with_format(dir.join(name), format).unwrap();
}

fn source(config: FilesConfig) -> (FilesSource, Arc<ManualClock>) {
    let clock = ManualClock::at(T0);
    let src = FilesSource::new(config, clock.clone())
        .unwrap()
        .with_sleep(clock.sleeper());
    (src, clock)
}

/// (width, seq) of every frame until the stream ends, at most `limit`.
fn drain(src: &mut FilesSource, limit: usize) -> Vec<(usize, u64)> {
    let mut out = Vec::new();
    while out.len() < limit {
        match src.next_frame().unwrap() {
            Some(f) => {
                assert_eq!(f.rgb.len(), f.width * f.height * 3);
                assert!(f.ground_truth.is_none());
                out.push((f.width, f.seq));
            }
            None => break,
        }
    }
    out
}

#[test]
fn reads_images_in_name_order_with_any_case_extension() {
    let dir = tempfile::tempdir().unwrap();
    write_image(dir.path(), "frame_03.JpEg", 3);
    write_image(dir.path(), "frame_01.PNG", 1);
    write_image(dir.path(), "frame_02.jpg", 2);
    write_image(dir.path(), "frame_04.png", 4);
    std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
    std::fs::create_dir(dir.path().join("frame_00.png")).unwrap(); // a folder, not a file

    let names: Vec<_> = list_images(dir.path())
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "frame_01.PNG",
            "frame_02.jpg",
            "frame_03.JpEg",
            "frame_04.png"
        ]
    );

    let (mut src, _) = source(FilesConfig::new(dir.path()));
    src.start().unwrap();
    assert_eq!(drain(&mut src, 100), [(1, 0), (2, 1), (3, 2), (4, 3)]);
    // Without looping the stream stays ended.
    assert!(src.next_frame().unwrap().is_none());
    assert_eq!(src.stats().frames, 4);
    assert_eq!(src.stats().skipped, 0);
    assert!(src.describe().contains("4 images"));
}

#[test]
fn decodes_to_rgb8_pixels() {
    let dir = tempfile::tempdir().unwrap();
    write_image(dir.path(), "a.png", 2);
    let (mut src, _) = source(FilesConfig::new(dir.path()));
    let f = src.next_frame().unwrap().unwrap();
    assert_eq!((f.width, f.height), (2, 3));
    assert_eq!(&f.rgb[..3], &[200, 40, 10]);
    assert_eq!(f.frame_id, "camera_optical_frame");
}

#[test]
fn loops_forever_when_asked_and_max_frames_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    write_image(dir.path(), "a.png", 1);
    write_image(dir.path(), "b.png", 2);
    let config = FilesConfig {
        loop_forever: true,
        max_frames: Some(5),
        ..FilesConfig::new(dir.path())
    };
    let (mut src, _) = source(config);
    src.start().unwrap();
    assert_eq!(
        drain(&mut src, 100),
        [(1, 0), (2, 1), (1, 2), (2, 3), (1, 4)]
    );
    assert!(src.next_frame().unwrap().is_none());
}

#[test]
fn corrupt_files_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    write_image(dir.path(), "a.png", 1);
    std::fs::write(dir.path().join("b.png"), b"\x89PNG\r\n\x1a\ntruncated").unwrap();
    std::fs::write(dir.path().join("c.jpg"), b"").unwrap();
    write_image(dir.path(), "d.png", 4);

    let (mut src, _) = source(FilesConfig::new(dir.path()));
    // Skipped files leave gaps in seq.
    assert_eq!(drain(&mut src, 100), [(1, 0), (4, 3)]);
    assert_eq!(src.stats().skipped, 2);
    assert_eq!(src.stats().frames, 2);

    let looping = FilesConfig {
        loop_forever: true,
        ..FilesConfig::new(dir.path())
    };
    let (mut src, _) = source(looping);
    assert_eq!(drain(&mut src, 4), [(1, 0), (4, 3), (1, 4), (4, 7)]);
    assert_eq!(src.stats().skipped, 4);
}

#[test]
fn all_corrupt_files_end_in_an_error_not_a_spin() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.png", "b.jpg", "c.jpeg"] {
        std::fs::write(dir.path().join(name), b"garbage").unwrap();
    }
    for loop_forever in [false, true] {
        let config = FilesConfig {
            loop_forever,
            ..FilesConfig::new(dir.path())
        };
        let (mut src, _) = source(config);
        src.start().unwrap();
        let err = src.next_frame().unwrap_err();
        assert!(matches!(err, SourceError::NoImages { .. }), "{err}");
        assert_eq!(src.stats().skipped, 3, "loop_forever={loop_forever}");
        // And again, at once, without reading on.
        assert!(src.next_frame().is_err());
        assert_eq!(src.stats().skipped, 3);
    }
}

#[test]
fn missing_directory_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let (mut src, _) = source(FilesConfig::new(&missing));
    match src.start() {
        Err(SourceError::Missing { path, .. }) => assert_eq!(path, missing),
        other => panic!("{other:?}"),
    }
    // next_frame starts the source and reports the same.
    assert!(matches!(src.next_frame(), Err(SourceError::Missing { .. })));
}

#[test]
fn folder_without_images_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (mut src, _) = source(FilesConfig::new(dir.path()));
    assert!(matches!(src.start(), Err(SourceError::NoImages { .. })));
    std::fs::write(dir.path().join("readme.txt"), "x").unwrap();
    std::fs::write(dir.path().join("png"), "x").unwrap();
    assert!(matches!(
        list_images(dir.path()),
        Err(SourceError::NoImages { .. })
    ));
}

#[test]
fn a_file_is_not_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    write_image(dir.path(), "a.png", 1);
    assert!(matches!(
        list_images(&dir.path().join("a.png")),
        Err(SourceError::BadParameter { name: "dir", .. })
    ));
}

#[test]
fn stamps_are_read_times_and_pacing_keeps_schedule() {
    let dir = tempfile::tempdir().unwrap();
    for (i, name) in ["a.png", "b.png", "c.png"].iter().enumerate() {
        write_image(dir.path(), name, i as u32 + 1);
    }
    let (mut src, clock) = source(FilesConfig::new(dir.path()));
    clock.advance(Duration::from_nanos(5));
    assert_eq!(src.next_frame().unwrap().unwrap().stamp, Stamp(T0 + 5));
    clock.advance(Duration::from_nanos(7));
    assert_eq!(src.next_frame().unwrap().unwrap().stamp, Stamp(T0 + 12));

    let paced = FilesConfig {
        fps: 20.0,
        ..FilesConfig::new(dir.path())
    };
    let (mut src, clock) = source(paced);
    let mut stamps = Vec::new();
    while let Some(f) = src.next_frame().unwrap() {
        stamps.push(f.stamp.0 - T0);
        clock.advance(Duration::from_nanos(10_000_000)); // 10 ms of consumer work
    }
    assert_eq!(stamps, [0, 50_000_000, 100_000_000]);
}

#[test]
fn bad_parameters_are_rejected() {
    let clock: Arc<dyn Clock> = ManualClock::at(0);
    for fps in [-1.0, f64::NAN, f64::INFINITY] {
        let config = FilesConfig {
            fps,
            ..FilesConfig::new("/tmp")
        };
        assert!(matches!(
            FilesSource::new(config, clock.clone()),
            Err(SourceError::BadParameter { name: "fps", .. })
        ));
    }
}
