//! Only the host may talk to the dealer: the host-dealer link is sealed
//! under a key derived from the host key (`core::session::host_dealer_link_key`,
//! a mutual opening: `transport::seal`), so a client holding a device key
//! and its blob, which can compute a valid device key-confirmation tag,
//! gets nothing from the dealer; and a host and a dealer of different
//! deployments fail with one clear line at the device instead of a wrong
//! answer.

mod common;
use common::{Setup, bin, s, setup, start_dealer, start_host};
use mpcvit_core::FixedPoint;
use mpcvit_core::SessionId;
use mpcvit_core::model::ModelView;
use mpcvit_core::ops::vit::Tile;
use mpcvit_core::prg::Seed;
use mpcvit_core::provision;
use mpcvit_core::session::{self, DealerSetup, Message, Offer};
use mpcvit_transport::seal::{SALT_LEN, Sealed};
use mpcvit_transport::tcp::Tcp;
use mpcvit_transport::{FrameKind, Link};
use std::net::TcpStream;
use std::time::Duration;

fn read_key(p: &std::path::Path) -> Seed {
    let hex = std::fs::read_to_string(p).expect("key");
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex.trim()[2 * i..2 * i + 2], 16).expect("hex");
    }
    Seed::from_bytes(k)
}

/// The device's offer for the model of `st`, its blob made under `st`'s
/// host key.
fn offer(st: &Setup) -> Offer {
    let crc = provision::model_crc(&std::fs::read(&st.model).expect("model"));
    Offer {
        model_crc: crc,
        frac_bits: u8::try_from(FixedPoint::default().frac_bits()).expect("f"),
        tile: Tile::WHOLE,
        logits_to_host: false,
        key_check: session::blob_key_check(&read_key(&st.keys.join("host.key")), crc),
    }
}

/// The set-up message the host sends the dealer for a device of `st` with
/// `nonce`, offering `offer` with a tag over `tagged` (the session id the
/// device answered): it needs only the device key (for the tag) and the
/// model's plan, which the device's blob holds.
fn setup_for(st: &Setup, (session, tagged): (u64, u64), nonce: u64, offer: Offer) -> Vec<u8> {
    let kd = session::device_session_key(&read_key(&st.keys.join("device.key")), nonce);
    let mut m = vec![0u8; DealerSetup::MAX_LEN];
    let n = DealerSetup {
        session,
        nonce,
        offer,
        tag: session::device_tag(&kd, SessionId(tagged), &offer),
    }
    .encode(&mut m)
    .expect("encode")
    .len();
    m.truncate(n);
    let model = std::fs::read(&st.model).expect("model");
    let view = ModelView::parse(&model).expect("parse");
    let a = view.arch();
    let mut plan = vec![0; provision::plan_len(&a)];
    let fp = FixedPoint::default();
    provision::encode_plan(&a, fp.frac_bits(), provision::model_crc(&model), &view, &mut plan).expect("plan");
    m.extend_from_slice(&plan);
    m
}

/// A well-formed set-up for session `session`.
fn setup_message(st: &Setup, session: u64, nonce: u64) -> Vec<u8> {
    setup_for(st, (session, session), nonce, offer(st))
}

fn connect(addr: &str) -> Tcp {
    Tcp::new(
        TcpStream::connect(addr).expect("connect"),
        Some(Duration::from_secs(10)),
    )
    .expect("tcp")
}

/// A link to `addr` with the host's mutual sealed opening under `key`.
fn sealed_link(addr: &str, key: &Seed, salt: u8) -> Link<Sealed<Tcp, Vec<u8>>> {
    let s = Sealed::initiator_mutual(
        connect(addr),
        key.expose(),
        [salt; SALT_LEN],
        vec![0; 4096],
        vec![0; 4096],
    )
    .expect("opening");
    Link::new(s, 0)
}

/// What the dealer answers a set-up sent on `l`: the kind of its first
/// frame, or `None` if it sent none (closed or refused the records).
fn answer<T: embedded_io::Read + embedded_io::Write>(l: &mut Link<T>, msg: &[u8]) -> Option<FrameKind> {
    l.send(FrameKind::Hello, msg).ok()?;
    let mut buf = vec![0u8; 1 << 16];
    l.recv(&mut buf).ok().map(|(k, _)| k)
}

#[test]
fn a_device_key_alone_gets_no_correction() {
    let st = setup("dealer-link-device-key");
    let dealer = start_dealer(&st, &[]);
    // in the clear, as a host of the unsealed protocol would
    let mut plain = Link::new(connect(&dealer.1), 0);
    assert_eq!(answer(&mut plain, &setup_message(&st, 0x1111, 7)), None);
    // sealed under the device key's best guesses: the device key itself and
    // the link key it would derive from it
    let device_key = read_key(&st.keys.join("device.key"));
    for guess in [device_key.clone(), session::host_dealer_link_key(&device_key)] {
        let mut l = sealed_link(&dealer.1, &guess, 5);
        assert_eq!(answer(&mut l, &setup_message(&st, 0x2222, 8)), None);
    }
    // the control: with the host key's link key the same set-up is answered
    // (the dealer's tag), so the refusals above are the key's doing
    let link_key = session::host_dealer_link_key(&read_key(&st.keys.join("host.key")));
    let mut l = sealed_link(&dealer.1, &link_key, 6);
    assert_eq!(answer(&mut l, &setup_message(&st, 0x3333, 9)), Some(FrameKind::Hello));
}

#[test]
fn host_and_dealer_of_different_deployments_fail_clearly() {
    let a = setup("dealer-link-a");
    let b = setup("dealer-link-b");
    let dealer_b = start_dealer(&b, &[]);
    let host_a = start_host(&a, &dealer_b.1, &[]);
    let o = bin()
        .args([
            "device",
            "--connect",
            &host_a.1,
            "--blob",
            s(&a.blob),
            "--keys",
            s(&a.keys),
        ])
        .args(["--images", s(&a.images), "--index", "0"])
        .output()
        .expect("device");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("does not hold the host's key"), "{err}");
}

/// The dealer records the session ids it has served: the same set-up a
/// second time (a replay by a holder of the host key, or a host bug) is
/// refused, so no session's correlations are dealt twice.
#[test]
fn the_dealer_refuses_a_repeated_set_up() {
    let st = setup("dealer-link-repeat");
    let dealer = start_dealer(&st, &[]);
    let link_key = session::host_dealer_link_key(&read_key(&st.keys.join("host.key")));
    let msg = setup_message(&st, 0x4444, 10);
    let mut first = sealed_link(&dealer.1, &link_key, 7);
    assert_eq!(answer(&mut first, &msg), Some(FrameKind::Hello));
    drop(first);
    let mut again = sealed_link(&dealer.1, &link_key, 8);
    assert_eq!(answer(&mut again, &msg), Some(FrameKind::Abort));
}

/// Every set-up is bound to its session and checked against the
/// deployment before anything is dealt: a device tag made for another
/// session id (a hello replayed into a new session), an offer changed on
/// the way (the tile, the logits flag), a blob under another host key, and
/// a plan for another model than the device's are each refused, on a link
/// that the real host key opens.
#[test]
fn the_dealer_refuses_set_ups_not_bound_to_their_session() {
    let st = setup("dealer-link-bound");
    let dealer = start_dealer(&st, &[]);
    let link_key = session::host_dealer_link_key(&read_key(&st.keys.join("host.key")));
    let o = offer(&st);
    let ask = |salt: u8, msg: &[u8]| {
        let mut l = sealed_link(&dealer.1, &link_key, salt);
        l.send(FrameKind::Hello, msg).expect("send");
        let mut buf = vec![0u8; 1 << 16];
        let (k, p) = l.recv(&mut buf).expect("answer");
        (k, String::from_utf8_lossy(p).into_owned())
    };
    // the tag answered session 0x50, the set-up claims 0x51
    let (k, why) = ask(1, &setup_for(&st, (0x51, 0x50), 11, o));
    assert_eq!(k, FrameKind::Abort);
    assert!(why.contains("replayed from another session"), "{why}");
    // the tag covers the offer the device made; a relay changes it
    let tagged = setup_for(&st, (0x52, 0x52), 12, o);
    for changed in [
        Offer {
            tile: Tile { rows: 1, ..Tile::WHOLE },
            ..o
        },
        Offer {
            logits_to_host: true,
            ..o
        },
    ] {
        let (d, plan) = DealerSetup::decode_prefix(&tagged).expect("decode");
        let mut m = vec![0u8; DealerSetup::MAX_LEN];
        let n = DealerSetup { offer: changed, ..d }
            .encode(&mut m)
            .expect("encode")
            .len();
        m.truncate(n);
        m.extend_from_slice(plan);
        let (k, why) = ask(2, &m);
        assert_eq!(k, FrameKind::Abort, "{changed:?}");
        assert!(why.contains("key confirmation failed"), "{why}");
    }
    // the untouched set-up is answered: the refusals above are the binding's
    assert_eq!(ask(3, &tagged).0, FrameKind::Hello);
    // a blob under another host key, even with a valid tag over it
    let other = Offer {
        key_check: o.key_check ^ 1,
        ..o
    };
    let (k, why) = ask(4, &setup_for(&st, (0x53, 0x53), 13, other));
    assert_eq!(k, FrameKind::Abort);
    assert!(why.contains("another host key"), "{why}");
    // an offer for another model than the plan the host sends
    let wrong = Offer {
        model_crc: o.model_crc ^ 1,
        ..o
    };
    let (k, why) = ask(5, &setup_for(&st, (0x54, 0x54), 14, wrong));
    assert_eq!(k, FrameKind::Abort);
    assert!(why.contains("another model"), "{why}");
}
