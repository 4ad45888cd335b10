//! The harness's decoders on arbitrary bytes: IDX datasets, CIFAR-10
//! batches, PGM/PPM images, key files. Errors, never panics.

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn idx_decoders_never_panic(a in proptest::collection::vec(any::<u8>(), 0..200), b in proptest::collection::vec(any::<u8>(), 0..40)) {
        let _ = mpcvit::data::idx_images(&a, "fuzz");
        let _ = mpcvit::data::parse_idx(&a, &b, "fuzz");
        // A valid header with a lying count must be refused, not trusted.
        let mut h = vec![0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 28, 0, 0, 0, 28];
        h.extend_from_slice(&a);
        prop_assert!(mpcvit::data::idx_images(&h, "fuzz").is_err());
    }

    #[test]
    fn file_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..3200), header in 0usize..4) {
        let dir = std::env::temp_dir().join(format!("mpcvit-dec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("x");
        let mut b = match header {
            0 => b"P5\n28 28\n255\n".to_vec(),
            1 => b"P6 4 4 255 ".to_vec(),
            _ => Vec::new(),
        };
        b.extend_from_slice(&bytes);
        std::fs::write(&p, &b).expect("write");
        let _ = mpcvit::image::read_pnm(&p);
        let _ = mpcvit::keys::read_key(&p);
        let _ = mpcvit::data::cifar10(std::slice::from_ref(&p));
    }
}
