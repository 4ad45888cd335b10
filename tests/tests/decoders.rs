//! Decoders never panic on arbitrary bytes and give the right error on
//! damaged files: model files, dealer message headers, frames.

use mpcvit_core::model::{Arch, AttnKind, ModelError, ModelView, encode};
use mpcvit_core::{Correlations, Role, Seed, SessionId};
use mpcvit_transport::frame::{Feed, FrameDecoder};
use proptest::prelude::*;

fn small_model() -> Vec<u8> {
    let a = Arch {
        image: 8,
        channels: 1,
        patch: 4,
        dim: 8,
        layers: 1,
        heads: 2,
        mlp: 8,
        classes: 3,
    };
    let mut out = vec![0; a.file_len()];
    let w = (0..a.weights()).map(|i| (i % 7) as f32 * 0.1);
    encode(
        &a,
        16,
        |_, h| if h == 0 { AttnKind::Softmax } else { AttnKind::Scale },
        |_, t| t % 2 == 0,
        w,
        &mut out,
    )
    .expect("encode");
    out
}

#[test]
fn model_roundtrip_and_each_damage_is_named() {
    let good = small_model();
    let v = ModelView::parse(&good).expect("parse");
    assert_eq!(v.attn(0, 1), AttnKind::Scale);
    assert!(!v.gelu(0, 1));
    let mut bad = good.clone();
    bad[0] ^= 1;
    assert_eq!(ModelView::parse(&bad).err(), Some(ModelError::BadMagic));
    let mut bad = good.clone();
    bad[8] = 9;
    assert_eq!(ModelView::parse(&bad).err(), Some(ModelError::BadVersion(9)));
    let mut bad = good.clone();
    let last = bad.len() - 10;
    bad[last] ^= 0x40;
    assert_eq!(ModelView::parse(&bad).err(), Some(ModelError::BadChecksum));
    assert!(matches!(
        ModelView::parse(&good[..good.len() - 1]),
        Err(ModelError::Truncated { .. })
    ));
    let mut long = good.clone();
    long.push(0);
    assert_eq!(ModelView::parse(&long).err(), Some(ModelError::TrailingBytes));
    let mut bad = good.clone();
    bad[17] = 0; // zero layers
    assert!(matches!(ModelView::parse(&bad), Err(ModelError::BadArch(_))));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn model_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = ModelView::parse(&bytes);
    }

    #[test]
    fn model_parser_never_panics_on_mutated_models(pos in 0usize..2000, val in any::<u8>(), cut in 0usize..2000) {
        let mut m = small_model();
        let p = pos % m.len();
        m[p] = val;
        m.truncate(cut.max(1) % (m.len() + 1));
        let _ = ModelView::parse(&m);
    }

    #[test]
    fn frame_decoder_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..20)) {
        let mut d = FrameDecoder::<256>::new();
        for c in &chunks {
            let mut rest = &c[..];
            while !rest.is_empty() {
                match d.feed(rest) {
                    Feed::NeedMore => break,
                    Feed::Frame { consumed } | Feed::Error { consumed, .. } => rest = &rest[consumed.max(1).min(rest.len())..],
                }
            }
        }
    }

    #[test]
    fn dealer_header_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut c = Correlations::new(Role::Host, &Seed::from_bytes([1; 32]), SessionId(7));
        let _ = c.next_op_with(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Session set-up messages: arbitrary bytes (half of them after this
    /// build's version byte) give an error or a value, never a panic; a
    /// decoded message re-encodes, within its `MAX_LEN`, to bytes that
    /// decode to the same value (postcard may read an overlong varint, which
    /// the tags do not care about: they cover values, not bytes).
    #[test]
    fn setup_decoders_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..80),
        versioned in any::<bool>(),
    ) {
        use mpcvit_core::session::{Accept, Challenge, DealerConfirm, DealerSetup, DeviceHello, Message, VERSION};
        fn again<M: Message + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Result<(), TestCaseError> {
            if let Ok((m, rest)) = M::decode_prefix(bytes) {
                let mut b = vec![0u8; M::MAX_LEN];
                let n = m.encode(&mut b).map(<[u8]>::len).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(n <= M::MAX_LEN && n <= bytes.len() - rest.len());
                prop_assert_eq!(M::decode(&b[..n]), Ok(m));
                prop_assert_eq!(M::decode(bytes).is_ok(), rest.is_empty());
            }
            Ok(())
        }
        let bytes: Vec<u8> = if versioned { std::iter::once(VERSION).chain(body).collect() } else { body };
        again::<Challenge>(&bytes)?;
        again::<DeviceHello>(&bytes)?;
        again::<DealerSetup>(&bytes)?;
        again::<DealerConfirm>(&bytes)?;
        again::<Accept>(&bytes)?;
    }

    /// Provisioning blobs and plans, from arbitrary bytes and from damaged
    /// real ones.
    #[test]
    fn blob_and_plan_parsers_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        pos in 0usize..100_000,
        val in any::<u8>(),
        cut in 0usize..100_000,
    ) {
        use mpcvit_core::provision::BlobView;
        let _ = BlobView::parse(&bytes);
        let _ = BlobView::parse_plan(&bytes);
        let m = small_model();
        let view = ModelView::parse(&m).expect("model");
        let blob = mpcvit_host::device_blob(&m, mpcvit_core::FixedPoint::default(), &Seed::from_bytes([2; 32]))
            .expect("blob");
        let mut b = blob.clone();
        let p = pos % b.len();
        b[p] = val;
        b.truncate(cut % (b.len() + 1));
        if let Ok(v) = BlobView::parse(&b) {
            // Only an intact blob parses (CRC), and then it is this model's.
            prop_assert_eq!(v.arch(), view.arch());
        }
    }
}
