//! Tampered traffic gives a clear error, never a panic: bit flips and
//! truncation in flight, wrong-length payloads with a valid frame, replayed
//! and foreign dealer messages.

use mpcvit_conformance::{RunError, World};
use mpcvit_core::ProtocolError;
use mpcvit_core::corr::dealer_message_len;
use mpcvit_core::protocol::mul::{self, Mul};
use mpcvit_transport::frame::{self, Feed, FrameDecoder, FrameError, FrameKind, Header};
use mpcvit_transport::link::{Error, Link};
use mpcvit_transport::mem;

/// A mul where the device's opening is altered in flight by `alter` on the
/// raw frame bytes; returns the host's error.
fn host_error_after(alter: impl Fn(&mut Vec<u8>)) -> RunError {
    let mut w = World::new(1, 99);
    let (x, y) = (vec![5u64; 16], vec![7u64; 16]);
    let ((x0, x1), (y0, y1)) = (w.share(&x), w.share(&y));
    w.dealer.mul(16).expect("deal");
    let msg = w.host.recv_dealer().expect("dealer msg");
    let h = w.host.mul_open(&msg, &x0, &y0).expect("host open");
    // The device encodes its frame; the "wire" alters it; the host reads it.
    let corr = w.device.corr.next_op().expect("op");
    let op = Mul::new(corr, 16).expect("mul");
    let mut payload = vec![0; mul::msg_len(16)];
    let (_st, n) = op.open(&x1, &y1, &mut payload).expect("open");
    let header = Header {
        kind: FrameKind::Data,
        session: 99,
        seq: 0,
        len: n as u32,
    };
    let mut raw = vec![0; frame::OVERHEAD + n];
    frame::encode(&header, &payload[..n], &mut raw).expect("encode");
    alter(&mut raw);
    embedded_io::Write::write(w.device.host.get_mut(), &raw).expect("raw write");
    drop(w.device); // closes the pipe: a truncated frame ends in EOF
    w.host.mul_finish(h, &x0, &y0).expect_err("tampered frame must fail")
}

#[test]
fn bit_flip_in_payload_is_a_crc_error() {
    for bit in [0usize, 7, 100, 8 * 24 + 3] {
        let e = host_error_after(|raw| raw[frame::HEADER_LEN + bit / 8] ^= 1 << (bit % 8));
        assert!(matches!(e, RunError::Link(ref s) if s.contains("CRC")), "{e:?}");
    }
}

#[test]
fn bit_flip_in_header_is_rejected() {
    for (byte, what) in [(0usize, "magic"), (2, "version"), (3, "kind"), (5, "CRC"), (13, "CRC")] {
        let e = host_error_after(|raw| raw[byte] ^= 0x10);
        assert!(matches!(e, RunError::Link(ref s) if s.contains(what)), "{what}: {e:?}");
    }
}

#[test]
fn truncated_frame_is_peer_closed() {
    for keep in [0usize, 5, 20, 40] {
        let e = host_error_after(|raw| raw.truncate(keep));
        assert!(
            matches!(e, RunError::Link(ref s) if s.contains("closed")),
            "{keep}: {e:?}"
        );
    }
}

#[test]
fn oversized_length_field_is_rejected_without_allocation() {
    let e = host_error_after(|raw| raw[16..20].copy_from_slice(&u32::MAX.to_le_bytes()));
    assert!(matches!(e, RunError::Link(ref s) if s.contains("exceeds")), "{e:?}");
}

#[test]
fn wrong_length_payload_is_a_protocol_error() {
    let mut w = World::new(2, 5);
    let (x, y) = (vec![1u64; 8], vec![2u64; 8]);
    w.dealer.mul(8).expect("deal");
    let msg = w.host.recv_dealer().expect("msg");
    let h = w.host.mul_open(&msg, &x, &y).expect("open");
    w.device.host.send(FrameKind::Data, &[0u8; 17]).expect("send");
    let e = w.host.mul_finish(h, &x, &y).expect_err("must fail");
    assert!(matches!(
        e,
        RunError::Protocol(ProtocolError::BadLength { expected: 128, got: 17 })
    ));
}

#[test]
fn replayed_dealer_message_is_refused_and_poisons() {
    let mut w = World::new(3, 6);
    w.dealer.mul(4).expect("deal");
    let msg = w.host.recv_dealer().expect("msg");
    let _first = w.host.corr.next_op_with(&msg).expect("first use");
    assert_eq!(w.host.corr.next_op_with(&msg).err(), Some(ProtocolError::WrongOp));
    // poisoned: even a correct message is refused now
    w.dealer.mul(4).expect("deal");
    let msg2 = w.host.recv_dealer().expect("msg");
    assert_eq!(w.host.corr.next_op_with(&msg2).err(), Some(ProtocolError::Poisoned));
}

#[test]
fn dealer_message_of_another_session_is_refused() {
    let mut a = World::new(4, 100);
    let mut b = World::new(4, 200);
    a.dealer.mul(4).expect("deal");
    let msg = a.host.recv_dealer().expect("msg");
    assert_eq!(b.host.corr.next_op_with(&msg).err(), Some(ProtocolError::WrongOp));
    assert_eq!(msg.len(), dealer_message_len(4));
}

#[test]
fn frame_of_another_session_or_sequence_is_refused() {
    let (a, b) = mem::pair();
    let (mut la, mut lb) = (Link::new(a, 1), Link::new(b, 2));
    la.send(FrameKind::Data, b"hi").expect("send");
    let mut buf = [0u8; 64];
    assert!(matches!(
        lb.recv(&mut buf),
        Err(Error::Frame(FrameError::WrongSession { expected: 2, got: 1 }))
    ));
    assert!(matches!(lb.recv(&mut buf), Err(Error::Poisoned)));

    let (a, b) = mem::pair();
    let (mut la, mut lb) = (Link::new(a, 1), Link::new(b, 1));
    let mut raw = [0u8; 64];
    let n = frame::encode(
        &Header {
            kind: FrameKind::Data,
            session: 1,
            seq: 1,
            len: 2,
        },
        b"hi",
        &mut raw,
    )
    .expect("enc");
    embedded_io::Write::write(la.get_mut(), &raw[..n]).expect("write");
    assert!(matches!(
        lb.recv(&mut buf),
        Err(Error::Frame(FrameError::WrongSequence { expected: 0, got: 1 }))
    ));
}

#[test]
fn streaming_decoder_resyncs_after_garbage() {
    let mut dec = FrameDecoder::<128>::new();
    let mut raw = [0u8; 64];
    let n = frame::encode(
        &Header {
            kind: FrameKind::Data,
            session: 9,
            seq: 0,
            len: 5,
        },
        b"hello",
        &mut raw,
    )
    .expect("enc");
    // byte by byte
    let mut got = None;
    for (i, b) in raw[..n].iter().enumerate() {
        match dec.feed(std::slice::from_ref(b)) {
            Feed::NeedMore => assert!(i + 1 < n),
            Feed::Frame { consumed } => {
                assert_eq!((i + 1, consumed), (n, 1));
                got = dec.frame().map(|f| f.payload.to_vec());
            }
            Feed::Error { error, .. } => panic!("{error}"),
        }
    }
    assert_eq!(got.as_deref(), Some(&b"hello"[..]));
    // a corrupted frame is an error, and the decoder is usable after it
    let mut bad = raw;
    bad[22] ^= 1;
    assert!(matches!(
        dec.feed(&bad[..n]),
        Feed::Error {
            error: FrameError::BadCrc,
            ..
        }
    ));
    assert!(matches!(dec.feed(&raw[..n]), Feed::Frame { .. }));
    // a frame too long for the buffer is refused at the header
    let mut big = [0u8; 20];
    big.copy_from_slice(
        &Header {
            kind: FrameKind::Data,
            session: 9,
            seq: 0,
            len: 200,
        }
        .encode(),
    );
    assert!(matches!(
        dec.feed(&big),
        Feed::Error {
            error: FrameError::TooLong { len: 200, .. },
            ..
        }
    ));
}
