//! [`Party`] drivers over links for the host, the device and the dealer, so
//! composite ops run as three threads over in-memory pipes or TCP.

use crate::{MAX_MSG, Res, RunError};
use embedded_io::{Read, Write};
use mpcvit_core::corr::dealer_message_len;
use mpcvit_core::ops::{LutJob, Party, PartyKind};
use mpcvit_core::protocol::linear::{self, LinearDevice, LinearHost, LinearShape};
use mpcvit_core::protocol::lut::{self, Lut};
use mpcvit_core::protocol::matmul::{self, Matmul, MatmulShape};
use mpcvit_core::protocol::mul::{self, Mul};
use mpcvit_core::protocol::{scale, square, trunc};
use mpcvit_core::{Correlations, DealerSession, FixedPoint, ProtocolError, Role, Seed, SessionId};
use mpcvit_transport::FrameKind;
use mpcvit_transport::link::Link;

/// Largest dealer message the drivers produce: bigger lookups are split.
pub const CHUNK_BYTES: usize = mpcvit_core::ops::DEALER_CHUNK_BYTES;

/// One party of a composite op.
pub struct Driver<T> {
    kind: PartyKind,
    fp: FixedPoint,
    /// Host: link to the device; device: link to the host; dealer: link to the host.
    peer: Link<T>,
    /// Host only: link from the dealer.
    dealer: Option<Link<T>>,
    corr: Option<Correlations>,
    session: Option<DealerSession>,
    buf: Vec<u8>,
    /// Host: buffers of dealer messages already used, for the next ones.
    pool: Pool,
}

/// Spent message buffers. A secure inference moves a gigabyte or more of
/// dealer messages of up to [`CHUNK_BYTES`]; allocating each afresh cost a
/// third of the run in page faults and zeroing.
type Pool = std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>;

/// A dealer message in a buffer that goes back to its pool when dropped.
struct Pooled {
    /// [`MAX_MSG`] bytes (the host receives straight into it), or none.
    buf: Vec<u8>,
    /// Length of the message at the start of `buf`.
    len: usize,
    pool: Option<Pool>,
}

impl Pooled {
    /// No message (the device and the dealer receive none).
    fn empty() -> Self {
        Self {
            buf: Vec::new(),
            len: 0,
            pool: None,
        }
    }
}

impl std::ops::Deref for Pooled {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(Ok(mut p)) = self.pool.as_ref().map(|p| p.lock()) {
            p.push(std::mem::take(&mut self.buf));
        }
    }
}

impl From<String> for RunError {
    fn from(s: String) -> Self {
        RunError::Link(s)
    }
}

impl<T: Read + Write> Driver<T> {
    /// The host.
    pub fn host(fp: FixedPoint, dev: Link<T>, dealer: Link<T>, key: &Seed, sid: SessionId) -> Self {
        Self {
            kind: PartyKind::Host,
            fp,
            peer: dev,
            dealer: Some(dealer),
            corr: Some(Correlations::new(Role::Host, key, sid)),
            session: None,
            buf: vec![0; MAX_MSG],
            pool: Pool::default(),
        }
    }

    /// The device.
    pub fn device(fp: FixedPoint, host: Link<T>, key: &Seed, sid: SessionId) -> Self {
        Self {
            kind: PartyKind::Device,
            fp,
            peer: host,
            dealer: None,
            corr: Some(Correlations::new(Role::Device, key, sid)),
            session: None,
            buf: vec![0; MAX_MSG],
            pool: Pool::default(),
        }
    }

    /// The dealer.
    pub fn dealer(fp: FixedPoint, host: Link<T>, host_key: &Seed, device_key: &Seed, sid: SessionId) -> Self {
        Self {
            kind: PartyKind::Dealer,
            fp,
            peer: host,
            dealer: None,
            corr: None,
            session: Some(DealerSession::new(host_key, device_key, sid)),
            buf: Vec::new(),
            pool: Pool::default(),
        }
    }

    /// The link to the peer (for metering).
    pub fn link(&self) -> &Link<T> {
        &self.peer
    }

    /// The dealer link (host only).
    pub fn dealer_link(&self) -> Option<&Link<T>> {
        self.dealer.as_ref()
    }

    fn corr(&mut self) -> Res<&mut Correlations> {
        self.corr
            .as_mut()
            .ok_or(RunError::Protocol(ProtocolError::BadParameter))
    }

    fn deal(
        &mut self,
        words: usize,
        f: impl FnOnce(&mpcvit_core::corr::DealerOp, &mut [u8]) -> Result<usize, ProtocolError>,
    ) -> Res<()> {
        let op = self
            .session
            .as_mut()
            .ok_or(RunError::Protocol(ProtocolError::BadParameter))?
            .next_op()?;
        // one buffer for every message (the writer overwrites each word)
        let mut out = std::mem::take(&mut self.buf);
        out.resize(dealer_message_len(words), 0);
        let sent = f(&op, &mut out)
            .map_err(RunError::from)
            .and_then(|n| Ok(self.peer.send(FrameKind::Dealer, out.get(..n).unwrap_or(&[]))?));
        self.buf = out;
        sent
    }

    /// Host: the dealer messages of the next `k` ops; others: `k` empty ones.
    fn dealer_msgs(&mut self, k: usize) -> Res<Vec<Pooled>> {
        (0..k).map(|_| self.dealer_msg()).collect()
    }

    /// Host: the dealer message of the next op; others: an empty one.
    fn dealer_msg(&mut self) -> Res<Pooled> {
        if self.kind == PartyKind::Host {
            self.recv_dealer()
        } else {
            Ok(Pooled::empty())
        }
    }

    /// Host side of a truncation: `device_part` is the device's `z1 + r1`
    /// (alone, or riding in the same frame as an earlier op's message).
    fn host_trunc_reply(
        &mut self,
        dealer_msg: &[u8],
        y0: &[u64],
        device_part: &[u8],
        bits: u32,
        z: &mut [u64],
    ) -> Res<()> {
        let t = trunc::TruncHost::new(self.next_op(dealer_msg)?, y0.len(), bits)?;
        let mut reply = vec![0; trunc::host_msg_len(y0.len())];
        t.respond(y0, device_part, &mut reply, z)?;
        self.peer.send(FrameKind::Data, &reply)?;
        Ok(())
    }

    /// Device side of a truncation: appends `y1 + r1` to `out` (empty, or
    /// holding an earlier op's message), sends the frame, finishes.
    fn device_trunc_send(&mut self, mut out: Vec<u8>, y1: &[u64], bits: u32, z: &mut [u64]) -> Res<()> {
        let head = out.len();
        out.resize(head + trunc::device_msg_len(y1.len()), 0);
        let t = trunc::TruncDevice::new(self.next_op(&[])?, y1.len(), bits)?;
        let (st, _) = t.send(y1, &mut out[head..])?;
        self.peer.send(FrameKind::Data, &out)?;
        let reply = self.recv_peer()?;
        st.finish(&reply, z)?;
        Ok(())
    }

    fn recv_dealer(&mut self) -> Res<Pooled> {
        let l = self
            .dealer
            .as_mut()
            .ok_or(RunError::Protocol(ProtocolError::BadParameter))?;
        // Received in place: no copy out of a shared receive buffer. A new
        // buffer is zeroed lazily by the allocator, so only the pages that
        // messages use are ever touched.
        let mut buf = self.pool.lock().ok().and_then(|mut p| p.pop()).unwrap_or_default();
        if buf.len() < MAX_MSG {
            buf = vec![0; MAX_MSG];
        }
        let len = l.recv_kind(FrameKind::Dealer, &mut buf)?.len();
        Ok(Pooled {
            buf,
            len,
            pool: Some(self.pool.clone()),
        })
    }

    fn recv_peer(&mut self) -> Res<Vec<u8>> {
        Ok(self.peer.recv_kind(FrameKind::Data, &mut self.buf)?.to_vec())
    }

    fn next_op<'m>(&mut self, msg: &'m [u8]) -> Res<mpcvit_core::OpCorr<'m>> {
        let kind = self.kind;
        let c = self.corr()?;
        Ok(if kind == PartyKind::Host {
            c.next_op_with(msg)?
        } else {
            c.next_op()?
        })
    }
}

impl<T: Read + Write> Driver<T> {
    /// Reveals `x` to `to` (host or device): the other one sends its share,
    /// `to` outputs the value; everyone else gets zeros.
    fn reveal_to(&mut self, to: PartyKind, x: &[u64], out: &mut [u64]) -> Res<()> {
        if self.kind == to {
            let peer = self.recv_peer()?;
            mpcvit_core::wire::expect_len(&peer, 8 * x.len())?;
            for ((o, &v), w) in out.iter_mut().zip(x).zip(mpcvit_core::wire::words(&peer)) {
                *o = v.wrapping_add(w);
            }
            return Ok(());
        }
        if self.kind != PartyKind::Dealer {
            let mut b = vec![0u8; 8 * x.len()];
            mpcvit_core::wire::put_words(&mut b, x.iter().copied());
            self.peer.send(FrameKind::Data, &b)?;
        }
        out.fill(0);
        Ok(())
    }
}

impl<T: Read + Write> Party for Driver<T> {
    type Error = RunError;

    fn kind(&self) -> PartyKind {
        self.kind
    }

    fn fp(&self) -> FixedPoint {
        self.fp
    }

    fn mul(&mut self, x: &[u64], y: &[u64], cols: usize, z: &mut [u64]) -> Res<()> {
        if self.kind == PartyKind::Dealer {
            return self.deal(x.len(), |op, out| mul::deal_rows(op, x.len(), cols, out));
        }
        let msg = self.dealer_msg()?;
        let op = Mul::with_rows(self.next_op(&msg)?, x.len(), cols)?;
        let mut out = vec![0; op.msg_len()];
        let (st, n) = op.open(x, y, &mut out)?;
        self.peer.send(FrameKind::Data, &out[..n])?;
        let peer = self.recv_peer()?;
        st.finish(x, y, &peer, z)?;
        Ok(())
    }

    fn square(&mut self, x: &[u64], z: &mut [u64]) -> Res<()> {
        if self.kind == PartyKind::Dealer {
            return self.deal(x.len(), |op, out| square::deal(op, x.len(), out));
        }
        let msg = self.dealer_msg()?;
        let op = square::Square::new(self.next_op(&msg)?, x.len())?;
        let mut out = vec![0; square::msg_len(x.len())];
        let (st, n) = op.open(x, &mut out)?;
        self.peer.send(FrameKind::Data, &out[..n])?;
        let peer = self.recv_peer()?;
        st.finish(x, &peer, z)?;
        Ok(())
    }

    fn matmuls(&mut self, shapes: &[MatmulShape], x: &[u64], y: &[u64], z: &mut [u64]) -> Res<()> {
        if self.kind == PartyKind::Dealer {
            for &s in shapes {
                let mut scratch = vec![0; s.dealer_scratch_len()];
                self.deal(s.n * s.m, |op, out| matmul::deal(op, s, &mut scratch, out))?;
            }
            return Ok(());
        }
        let msgs = self.dealer_msgs(shapes.len())?;
        let (mut xo, mut yo) = (0, 0);
        let mut opened = Vec::new();
        let mut sent = Vec::new();
        for (&s, m) in shapes.iter().zip(&msgs) {
            let op = Matmul::new(self.next_op(m)?, s)?;
            let mut out = vec![0; s.msg_len()];
            let (st, _) = op.open(&x[xo..xo + s.n * s.k], &y[yo..yo + s.k * s.m], &mut out)?;
            xo += s.n * s.k;
            yo += s.k * s.m;
            sent.extend_from_slice(&out);
            opened.push(st);
        }
        self.peer.send(FrameKind::Data, &sent)?;
        let peer = self.recv_peer()?;
        if peer.len() != sent.len() {
            return Err(RunError::Protocol(ProtocolError::BadLength {
                expected: sent.len(),
                got: peer.len(),
            }));
        }
        let (mut xo, mut yo, mut zo, mut po) = (0, 0, 0, 0);
        for (&s, st) in shapes.iter().zip(opened) {
            let mut scratch = vec![0; s.scratch_len()];
            st.finish(
                &x[xo..xo + s.n * s.k],
                &y[yo..yo + s.k * s.m],
                &peer[po..po + s.msg_len()],
                &mut scratch,
                &mut z[zo..zo + s.n * s.m],
            )?;
            xo += s.n * s.k;
            yo += s.k * s.m;
            zo += s.n * s.m;
            po += s.msg_len();
        }
        Ok(())
    }

    fn linear_trunc(
        &mut self,
        s: LinearShape,
        x: &[u64],
        w: &[u64],
        bias: &[u64],
        bits: u32,
        z: &mut [u64],
    ) -> Res<()> {
        let nz = s.n * s.dout;
        match self.kind {
            PartyKind::Dealer => {
                let mut acc = vec![0; s.dout];
                self.deal(s.corrections(), |op, out| linear::deal(op, s, w, &mut acc, out))?;
                self.deal(2 * nz, |op, out| trunc::deal(op, nz, bits, out))
            }
            PartyKind::Host => {
                let m1 = self.recv_dealer()?;
                let m2 = self.recv_dealer()?;
                let op = LinearHost::new(self.next_op(&m1)?, s)?;
                let peer = self.recv_peer()?;
                let need = s.msg_len() + 8 * nz;
                if peer.len() != need {
                    return Err(RunError::Protocol(ProtocolError::BadLength {
                        expected: need,
                        got: peer.len(),
                    }));
                }
                let (pa, pb) = peer.split_at(s.msg_len());
                let mut y0 = vec![0; nz];
                op.finish(x, w, pa, &mut y0)?;
                if !bias.is_empty() {
                    mpcvit_core::protocol::affine::add_bias(Role::Host, &mut y0, bias)?;
                }
                self.host_trunc_reply(&m2, &y0, pb, bits, z)
            }
            PartyKind::Device => {
                let op = LinearDevice::new(self.next_op(&[])?, s)?;
                let mut out = vec![0; s.msg_len()];
                let (sent, _) = op.send(x, &mut out)?;
                let mut y1 = vec![0; nz];
                sent.output(w, &mut y1)?;
                self.device_trunc_send(out, &y1, bits, z)
            }
        }
    }

    fn reveal_to_device(&mut self, x: &[u64], out: &mut [u64]) -> Res<()> {
        self.reveal_to(PartyKind::Device, x, out)
    }

    fn reveal_to_host(&mut self, x: &[u64], out: &mut [u64]) -> Res<()> {
        self.reveal_to(PartyKind::Host, x, out)
    }

    fn luts(&mut self, jobs: &[LutJob<'_>], x: &[u64], out: &mut [u64]) -> Res<()> {
        // split big jobs so that no dealer message exceeds CHUNK_BYTES
        let mut split = Vec::new();
        for j in jobs {
            let step = mpcvit_core::ops::lut_chunk(j.shape, j.table);
            let mut left = j.shape.n;
            while left > 0 {
                let n = left.min(step);
                split.push(LutJob {
                    shape: lut::LutShape { n, ..j.shape },
                    table: j.table,
                });
                left -= n;
            }
        }
        let jobs = &split[..];
        if self.kind == PartyKind::Dealer {
            for j in jobs {
                let mut scratch = vec![0; lut::dealer_scratch_len(j.shape, j.table)];
                self.deal(j.shape.corrections(j.table), |op, o| {
                    lut::deal(op, j.shape, j.table, &mut scratch, o)
                })?;
            }
            return Ok(());
        }
        let msgs = self.dealer_msgs(jobs.len())?;
        let mut opened = Vec::new();
        let mut sent = Vec::new();
        let mut off = 0;
        for (j, m) in jobs.iter().zip(&msgs) {
            let op = Lut::new(self.next_op(m)?, j.shape, j.table)?;
            let mut o = vec![0; j.shape.msg_len()];
            let (st, _) = op.open(&x[off..off + j.shape.n], &mut o)?;
            off += j.shape.n;
            sent.extend_from_slice(&o);
            opened.push((st, o));
        }
        self.peer.send(FrameKind::Data, &sent)?;
        let peer = self.recv_peer()?;
        let (mut poff, mut ooff) = (0, 0);
        for (j, (st, own)) in jobs.iter().zip(opened) {
            let len = j.shape.msg_len();
            let p = peer
                .get(poff..poff + len)
                .ok_or(RunError::Protocol(ProtocolError::BadLength {
                    expected: poff + len,
                    got: peer.len(),
                }))?;
            st.finish(j.shape, j.table, &own, p, &mut out[ooff..ooff + j.out_len()])?;
            poff += len;
            ooff += j.out_len();
        }
        if poff != peer.len() {
            return Err(RunError::Protocol(ProtocolError::BadLength {
                expected: poff,
                got: peer.len(),
            }));
        }
        Ok(())
    }

    fn lut_grids(&mut self, grids: &[lut::Grid<'_>], x: &[u64], out: &mut [u64]) -> Res<()> {
        // chunks of elements, each its own op, all opened in one flight
        let n = x.len();
        let outs: usize = grids.iter().map(|g| g.table.outputs()).sum();
        let step = mpcvit_core::ops::grids_chunk(grids, n);
        let chunk = |m: usize| -> Vec<lut::Grid<'_>> {
            grids
                .iter()
                .map(|g| lut::Grid {
                    shape: lut::LutShape { n: m, ..g.shape },
                    table: g.table,
                })
                .collect()
        };
        let bounds: Vec<(usize, usize)> = (0..n).step_by(step).map(|a| (a, (a + step).min(n))).collect();
        if self.kind == PartyKind::Dealer {
            for &(a, b) in &bounds {
                let g = chunk(b - a);
                let mut scratch = vec![0; lut::grids_scratch_len(&g)];
                self.deal(lut::grids_corrections(&g), |op, o| {
                    lut::deal_grids(op, &g, &mut scratch, o)
                })?;
            }
            return Ok(());
        }
        let msgs = self.dealer_msgs(bounds.len())?;
        let w = lut::grids_width(grids);
        let mut sent = Vec::new();
        let mut opened = Vec::new();
        for (&(a, b), m) in bounds.iter().zip(&msgs) {
            let g = chunk(b - a);
            let op = Lut::with_grids(self.next_op(m)?, &g)?;
            let mut own = vec![0; w * (b - a)];
            let (st, _) = op.open(&x[a..b], &mut own)?;
            sent.extend_from_slice(&own);
            opened.push((st, own));
        }
        self.peer.send(FrameKind::Data, &sent)?;
        let peer = self.recv_peer()?;
        if peer.len() != sent.len() {
            return Err(RunError::Protocol(ProtocolError::BadLength {
                expected: sent.len(),
                got: peer.len(),
            }));
        }
        for (&(a, b), (st, own)) in bounds.iter().zip(opened) {
            let g = chunk(b - a);
            st.finish_grids(&g, &own, &peer[w * a..w * b], &mut out[outs * a..outs * b])?;
        }
        Ok(())
    }

    fn trunc(&mut self, bits: u32, x: &[u64], z: &mut [u64]) -> Res<()> {
        let n = x.len();
        match self.kind {
            PartyKind::Dealer => self.deal(2 * n, |op, out| trunc::deal(op, n, bits, out)),
            PartyKind::Host => {
                let msg = self.recv_dealer()?;
                let peer = self.recv_peer()?;
                self.host_trunc_reply(&msg, x, &peer, bits, z)
            }
            PartyKind::Device => self.device_trunc_send(Vec::new(), x, bits, z),
        }
    }

    fn scale_trunc(&mut self, x: &[u64], g: &[u64], bits: u32, z: &mut [u64]) -> Res<()> {
        let n = x.len();
        match self.kind {
            PartyKind::Dealer => {
                self.deal(n, |op, out| scale::deal(op, n / g.len().max(1), g, out))?;
                self.deal(2 * n, |op, out| trunc::deal(op, n, bits, out))
            }
            PartyKind::Host => {
                let m1 = self.recv_dealer()?;
                let m2 = self.recv_dealer()?;
                let c1 = self.next_op(&m1)?;
                let peer = self.recv_peer()?;
                if peer.len() != 16 * n {
                    return Err(RunError::Protocol(ProtocolError::BadLength {
                        expected: 16 * n,
                        got: peer.len(),
                    }));
                }
                let (pa, pb) = peer.split_at(8 * n);
                let mut y0 = vec![0; n];
                scale::host(c1, x, g, pa, &mut y0)?;
                self.host_trunc_reply(&m2, &y0, pb, bits, z)
            }
            PartyKind::Device => {
                let c1 = self.next_op(&[])?;
                let mut out = vec![0; 8 * n];
                let mut y1 = vec![0; n];
                scale::device(c1, x, g, &mut out, &mut y1)?;
                self.device_trunc_send(out, &y1, bits, z)
            }
        }
    }
}

/// Runs a composite op with host, device and dealer in three threads over
/// in-memory pipes. `f(party, input share, weights view)` runs on each;
/// returns the reconstructed output and the device's link meter.
pub fn run3<F>(
    test: u8,
    session: u64,
    fp: FixedPoint,
    x: &[u64],
    views: [&[u64]; 3],
    f: F,
) -> Res<(Vec<u64>, mpcvit_transport::Meter)>
where
    F: Fn(&mut Driver<mpcvit_transport::mem::MemEnd>, &[u64], &[u64]) -> Res<Vec<u64>> + Sync,
{
    run3_metered(test, session, fp, x, views, f).map(|r| (r.output, r.device))
}

/// What [`run3_metered`] measured.
#[derive(Debug)]
pub struct Run3 {
    /// Reconstructed output.
    pub output: Vec<u64>,
    /// The device's link meter (sent = device -> host).
    pub device: mpcvit_transport::Meter,
    /// The host's dealer-link meter (received = dealer -> host).
    pub dealer: mpcvit_transport::Meter,
    /// Wall time of the three parties, nanoseconds.
    pub wall_ns: u64,
}

/// [`run3`] with the dealer traffic and the wall time.
pub fn run3_metered<F>(test: u8, session: u64, fp: FixedPoint, x: &[u64], views: [&[u64]; 3], f: F) -> Res<Run3>
where
    F: Fn(&mut Driver<mpcvit_transport::mem::MemEnd>, &[u64], &[u64]) -> Res<Vec<u64>> + Sync,
{
    use mpcvit_transport::mem;
    let keys = crate::Keys::test(test);
    let sid = SessionId(session);
    let (hd, dh) = mem::pair();
    let (hdl, dlh) = mem::pair();
    let mut rng = mpcvit_core::prg::Prg::new(&Seed::from_bytes([test; 32]), session, 77);
    let x1: Vec<u64> = x.iter().map(|_| rng.next_u64()).collect();
    let x0: Vec<u64> = x.iter().zip(&x1).map(|(a, b)| a.wrapping_sub(*b)).collect();
    let zeros = vec![0u64; x.len()];
    let mut host = Driver::host(fp, Link::new(hd, session), Link::new(hdl, session), &keys.host, sid);
    let mut dev = Driver::device(fp, Link::new(dh, session), &keys.device, sid);
    let mut dl = Driver::dealer(fp, Link::new(dlh, session), &keys.host, &keys.device, sid);
    let t0 = std::time::Instant::now();
    std::thread::scope(|s| {
        let fd = &f;
        let dealer = s.spawn(move || fd(&mut dl, &zeros, views[2]).map(|_| ()));
        let device = s.spawn(|| fd(&mut dev, &x1, views[1]).map(|z| (z, dev.link().meter())));
        let z0 = f(&mut host, &x0, views[0]);
        let d = device
            .join()
            .map_err(|_| RunError::Link("device thread panicked".into()))?;
        let dl = dealer
            .join()
            .map_err(|_| RunError::Link("dealer thread panicked".into()))?;
        let (z0, (z1, meter)) = (z0?, d?);
        dl?;
        let dealer = host.dealer_link().map(|l| l.meter()).unwrap_or_default();
        Ok(Run3 {
            output: crate::reconstruct(&z0, &z1),
            device: meter,
            dealer,
            wall_ns: u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX),
        })
    })
}

/// The three parties' views of a host-private column vector `g`: the host's
/// `g`, the device's `g - B`, the dealer's `B`, with `B` the model mask of
/// tensor `id`.
pub fn weight_views(test: u8, id: u64, g: &[u64]) -> [Vec<u64>; 3] {
    let keys = crate::Keys::test(test);
    let mut b = vec![0; g.len()];
    mpcvit_core::protocol::linear::model_mask(&keys.model, id).fill(&mut b);
    let f = g.iter().zip(&b).map(|(x, y)| x.wrapping_sub(*y)).collect();
    [g.to_vec(), f, b]
}
