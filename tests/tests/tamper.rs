//! Tampered traffic gives a clear error, never a panic: bit flips and
//! truncation in flight, wrong-length payloads with a valid frame, replayed
//! and foreign dealer messages.

use mpcvit_conformance::RunError;
use mpcvit_conformance::tamper::{After, Alter, device_altered};
use mpcvit_core::ProtocolError;
use mpcvit_core::corr::{Correlations, DealerSession, Role, SessionId, dealer_message_len};
use mpcvit_core::protocol::mul;
use mpcvit_host::HostError;
use mpcvit_host::local::{self, LocalError, LocalKeys, Schedule};
use mpcvit_transport::frame::{self, Feed, FrameDecoder, FrameError, FrameKind, Header};
use mpcvit_transport::link::{Error, Link};
use mpcvit_transport::mem;

/// A 16-element product where the device's opening (its first frame) is
/// altered in flight by `alter`; the run's error (the host's, which sees
/// the altered frame first).
fn error_after(alter: Alter) -> RunError {
    let keys = LocalKeys::fixed(1);
    let fp = mpcvit_core::FixedPoint::default();
    let (x, y) = (vec![5u64; 16], vec![7u64; 16]);
    let xy: Vec<u64> = x.iter().chain(&y).copied().collect();
    let (s0, s1) = local::share(&keys, 99, &xy);
    let f = |p: &mut mpcvit_conformance::P<'_>, v: &[u64], _: &[u64]| {
        let (a, b) = v.split_at(16);
        let mut z = vec![0; 16];
        p.mul(a, b, 1, &mut z)?;
        Ok(z)
    };
    local::run3(
        fp,
        &keys,
        99,
        device_altered(0, alter),
        [&s0, &s1],
        [&[], &[], &[]],
        &f,
        Schedule::Concurrent,
    )
    .expect_err("a tampered frame must fail")
}

/// The host's device-link error, or a panic naming what came instead.
fn host_link_error(e: RunError) -> Error<std::io::Error> {
    match e {
        LocalError::Host(HostError::Device(e)) => e,
        other => panic!("expected the host's device link to fail, got {other:?}"),
    }
}

#[test]
fn bit_flip_in_payload_is_a_crc_error() {
    for bit in [0usize, 7, 100, 8 * 24 + 3] {
        let e = host_link_error(error_after(Box::new(move |raw: &mut Vec<u8>| {
            raw[frame::HEADER_LEN + bit / 8] ^= 1 << (bit % 8);
            After::Continue
        })));
        assert!(matches!(e, Error::Frame(FrameError::BadCrc)), "bit {bit}: {e:?}");
    }
}

#[test]
fn bit_flip_in_header_is_rejected() {
    for byte in [0usize, 2, 3, 5, 13] {
        let e = host_link_error(error_after(Box::new(move |raw: &mut Vec<u8>| {
            raw[byte] ^= 0x10;
            After::Continue
        })));
        let want = match byte {
            0 => matches!(e, Error::Frame(FrameError::BadMagic)),
            2 => matches!(e, Error::Frame(FrameError::BadVersion(_))),
            3 => matches!(e, Error::Frame(FrameError::BadKind(_))),
            _ => matches!(e, Error::Frame(FrameError::BadCrc)),
        };
        assert!(want, "byte {byte}: {e:?}");
    }
}

#[test]
fn truncated_frame_is_peer_closed() {
    for keep in [0usize, 5, 20, 40] {
        // the hook cuts the frame and closes the device's end of the pipe:
        // the host sees the end of the stream (or the pipe closed under its
        // write), the device its own closed end; either is reported, both
        // as the peer gone, never a panic or a wait
        let e = error_after(Box::new(move |raw: &mut Vec<u8>| {
            raw.truncate(keep);
            After::Close
        }));
        let gone = |l: &Error<std::io::Error>| {
            matches!(l, Error::Closed)
                || matches!(l, Error::Transport(io) if io.kind() == std::io::ErrorKind::BrokenPipe)
        };
        let ok = match &e {
            LocalError::Host(HostError::Device(l)) => gone(l),
            LocalError::Device(mpcvit_device::DeviceError::Link(l)) => gone(l),
            _ => false,
        };
        assert!(ok, "{keep}: {e:?}");
    }
}

#[test]
fn oversized_length_field_is_rejected_without_allocation() {
    let e = host_link_error(error_after(Box::new(|raw: &mut Vec<u8>| {
        raw[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        After::Continue
    })));
    assert!(matches!(e, Error::Frame(FrameError::TooLong { .. })), "{e:?}");
}

#[test]
fn wrong_length_payload_is_a_protocol_error() {
    // a valid frame (header, CRC) whose payload is 17 bytes instead of 256
    let e = error_after(Box::new(|raw: &mut Vec<u8>| {
        let h = Header {
            kind: FrameKind::Data,
            session: 99,
            seq: 0,
            len: 17,
        };
        let mut out = vec![0; frame::OVERHEAD + 17];
        frame::encode(&h, &[0u8; 17], &mut out).expect("encode");
        *raw = out;
        After::Continue
    }));
    assert!(
        matches!(
            e,
            LocalError::Host(HostError::Protocol(ProtocolError::BadLength { expected: 256, got: 17 }))
        ),
        "{e:?}"
    );
}

/// The dealer's message for a product of `n` in session `sid`.
fn dealt_mul(sid: u64, n: usize) -> Vec<u8> {
    let keys = LocalKeys::fixed(3);
    let mut d = DealerSession::new(&keys.host, &keys.device, SessionId(sid));
    let op = d.next_op().expect("op");
    let mut out = vec![0; dealer_message_len(n)];
    let len = mul::deal(&op, n, &mut out).expect("deal");
    out.truncate(len);
    out
}

#[test]
fn replayed_dealer_message_is_refused_and_poisons() {
    let keys = LocalKeys::fixed(3);
    let mut host = Correlations::new(Role::Host, &keys.host, SessionId(6));
    let msg = dealt_mul(6, 4);
    let _first = host.next_op_with(&msg).expect("first use");
    assert_eq!(host.next_op_with(&msg).err(), Some(ProtocolError::WrongOp));
    // poisoned: even a correct message is refused now
    let mut d = DealerSession::new(&keys.host, &keys.device, SessionId(6));
    let _ = d.next_op().expect("op 0");
    let op1 = d.next_op().expect("op 1");
    let mut msg2 = vec![0; dealer_message_len(4)];
    let len = mul::deal(&op1, 4, &mut msg2).expect("deal");
    assert_eq!(host.next_op_with(&msg2[..len]).err(), Some(ProtocolError::Poisoned));
}

#[test]
fn dealer_message_of_another_session_is_refused() {
    let keys = LocalKeys::fixed(3);
    let msg = dealt_mul(100, 4);
    let mut other = Correlations::new(Role::Host, &keys.host, SessionId(200));
    assert_eq!(other.next_op_with(&msg).err(), Some(ProtocolError::WrongOp));
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
