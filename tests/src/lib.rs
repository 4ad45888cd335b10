//! Conformance harness: the proptest laws in `tests/` run the product's
//! parties (`mpcvit_host::HostParty`, `mpcvit_device::DeviceParty`,
//! `mpcvit_host::DealerParty`) in three threads over in-memory pipes or
//! TCP (`mpcvit_host::local`), and compare what they compute with the
//! plaintext fixed-point reference. Nothing here implements a party: a law
//! that passes here passes for the device the firmware runs.
//!
//! [`World`] runs one op per call (each call a fresh session of the same
//! deployment); [`run3`] runs a composite op written against
//! [`mpcvit_core::ops::Party`]; [`tamper`] alters the device's frames in
//! flight.

use mpcvit_core::FixedPoint;
use mpcvit_core::corr::Role;
use mpcvit_core::ops::{LutJob, Party};
use mpcvit_core::prg::Prg;
use mpcvit_core::protocol::linear::LinearShape;
use mpcvit_core::protocol::lut::{LutShape, Table};
use mpcvit_core::protocol::matmul::MatmulShape;
use mpcvit_core::protocol::trunc;
use mpcvit_host::local::{self, LocalError, LocalKeys, Schedule};
use mpcvit_transport::Meter;

pub mod tamper;

pub use mpcvit_host::local::LocalKeys as Keys;

/// Any failure of a party in a test run over in-memory pipes.
pub type RunError = LocalError<std::io::Error>;

/// Result of a test run.
pub type Res<T> = Result<T, RunError>;

/// A party of a test run.
pub type P<'p> = dyn Party<Error = RunError> + 'p;

/// Test keys of deployment number `n` (fixed, so runs are reproducible).
pub fn keys(n: u8) -> LocalKeys {
    LocalKeys::fixed(n)
}

/// One deployment; each op runs as its own session.
pub struct World {
    keys: LocalKeys,
    session: u64,
    calls: u64,
    rng: Prg,
    /// Meters of the last op: the device's link and the host's dealer link.
    pub last: (Meter, Meter),
}

impl World {
    /// Deployment `test`, sessions derived from `session`.
    pub fn new(test: u8, session: u64) -> Self {
        let keys = keys(test);
        Self {
            rng: Prg::new(&keys.host, session, 0xface),
            keys,
            session,
            calls: 0,
            last: (Meter::default(), Meter::default()),
        }
    }

    /// The keys in use.
    pub fn keys(&self) -> &LocalKeys {
        &self.keys
    }

    /// Splits plaintext ring elements into random additive shares.
    pub fn share(&mut self, x: &[u64]) -> (Vec<u64>, Vec<u64>) {
        let x1: Vec<u64> = x.iter().map(|_| self.rng.next_u64()).collect();
        let x0 = x.iter().zip(&x1).map(|(a, b)| a.wrapping_sub(*b)).collect();
        (x0, x1)
    }

    /// Runs `f` on the three parties with `x` shared; the reconstructed
    /// output.
    fn run(
        &mut self,
        x: &[u64],
        views: [&[u64]; 3],
        f: impl Fn(&mut P<'_>, &[u64], &[u64]) -> Res<Vec<u64>> + Sync,
    ) -> Res<Vec<u64>> {
        let (x0, x1) = self.share(x);
        // a fresh session per op: no correlation is drawn twice
        self.calls += 1;
        let sid = self.session ^ self.calls.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let links = (mpcvit_transport::mem::pair(), mpcvit_transport::mem::pair());
        let fp = FixedPoint::default();
        let r = local::run3(fp, &self.keys, sid, links, [&x0, &x1], views, &f, Schedule::Concurrent)?;
        self.last = (r.device, r.dealer);
        Ok(r.output)
    }

    /// Runs `f` on the three parties with `x` shared (any sequence of
    /// ops); the reconstructed output.
    pub fn run_any(&mut self, x: &[u64], f: impl Fn(&mut P<'_>, &[u64]) -> Res<Vec<u64>> + Sync) -> Res<Vec<u64>> {
        self.run(x, [&[], &[], &[]], |p, v, _| f(p, v))
    }

    /// Elementwise product (ring), computed securely.
    pub fn mul(&mut self, x: &[u64], y: &[u64]) -> Res<Vec<u64>> {
        let n = x.len();
        let xy: Vec<u64> = x.iter().chain(y).copied().collect();
        self.run(&xy, [&[], &[], &[]], |p, v, _| {
            let (a, b) = v.split_at(n);
            let mut z = vec![0; n];
            p.mul(a, b, 1, &mut z)?;
            Ok(z)
        })
    }

    /// Shared x shared matrix product (ring).
    pub fn matmul(&mut self, s: MatmulShape, x: &[u64], y: &[u64]) -> Res<Vec<u64>> {
        let xy: Vec<u64> = x.iter().chain(y).copied().collect();
        self.run(&xy, [&[], &[], &[]], |p, v, _| {
            let (a, b) = v.split_at(s.n * s.k);
            let mut z = vec![0; s.n * s.m];
            p.matmul(s, a, &mut b.to_vec(), &mut z)?;
            Ok(z)
        })
    }

    /// Host-weights linear layer `x W + bias` truncated by `bits`, with `W`
    /// masked by model mask `layer`.
    pub fn linear_trunc(
        &mut self,
        s: LinearShape,
        layer: u64,
        (x, w, bias): (&[u64], &[u64], &[u64]),
        bits: u32,
    ) -> Res<Vec<u64>> {
        let views = local::weight_views(&self.keys, layer, w);
        self.run(x, [&views[0], &views[1], &views[2]], |p, v, w| {
            let mut z = vec![0; s.n * s.dout];
            p.linear_trunc(s, v, w, bias, bits, &mut z)?;
            Ok(z)
        })
    }

    /// [`Self::linear_trunc`] with the input sent ahead in blocks of `br x
    /// bc` (rows x columns, the last ones shorter), last block first
    /// ([`Party::linear_block`]), then the layer on row tiles of `tile` rows
    /// ([`Party::linear_trunc_sent`]).
    pub fn linear_trunc_blocks(
        &mut self,
        s: LinearShape,
        layer: u64,
        (x, w, bias): (&[u64], &[u64], &[u64]),
        bits: u32,
        (br, bc, tile): (usize, usize, usize),
    ) -> Res<Vec<u64>> {
        let views = local::weight_views(&self.keys, layer, w);
        let (n, din, dout) = (s.n, s.din, s.dout);
        self.run(x, [&views[0], &views[1], &views[2]], |p, v, w| {
            let mask = p.linear_mask()?;
            let mut e = vec![0; if p.role() == Role::Host { n * din } else { 0 }];
            let blocks: Vec<(usize, usize)> = (0..n)
                .step_by(br)
                .flat_map(|r0| (0..din).step_by(bc).map(move |c0| (r0, c0)))
                .collect();
            for &(r0, c0) in blocks.iter().rev() {
                let (r1, c1) = ((r0 + br).min(n), (c0 + bc).min(din));
                let blk: Vec<u64> = (r0..r1).flat_map(|r| v[r * din + c0..r * din + c1].to_vec()).collect();
                p.linear_block(mask, din, (r0, c0, c1 - c0), &blk, &mut e)?;
            }
            let mut z = vec![0; n * dout];
            for r0 in (0..n).step_by(tile) {
                let r1 = (r0 + tile).min(n);
                let rows = e.get(r0 * din..r1 * din).unwrap_or_default();
                let st = LinearShape { n: r1 - r0, ..s };
                p.linear_trunc_sent(mask, r0, st, rows, w, bias, bits, &mut z[r0 * dout..r1 * dout])?;
            }
            Ok(z)
        })
    }

    /// An exact truncation of `x` by `tbits` (whole ring), then a linear
    /// layer on its output whose device share the device takes from its
    /// seed ([`Party::linear_trunc_held`]), in `s.width` bytes, truncated
    /// by `bits`: the truncation's output followed by the layer's, both
    /// reconstructed.
    pub fn trunc_then_linear_held(
        &mut self,
        tbits: u32,
        s: LinearShape,
        layer: u64,
        (x, w): (&[u64], &[u64]),
        bits: u32,
    ) -> Res<Vec<u64>> {
        let views = local::weight_views(&self.keys, layer, w);
        self.run(x, [&views[0], &views[1], &views[2]], |p, v, w| {
            let op = p.next_op_id();
            let mut t = vec![0; v.len()];
            p.trunc(tbits, v, &mut t)?;
            let mut z = vec![0; s.n * s.dout];
            p.linear_trunc_held((op, tbits), s, &t, w, &[], bits, &mut z)?;
            t.extend_from_slice(&z);
            Ok(t)
        })
    }

    /// Exact truncation by `fp`'s fractional bits.
    pub fn trunc(&mut self, fp: FixedPoint, z: &[u64]) -> Res<Vec<u64>> {
        self.run(z, [&[], &[], &[]], |p, v, _| {
            let mut t = vec![0; v.len()];
            p.trunc(fp.frac_bits(), v, &mut t)?;
            Ok(t)
        })
    }

    /// Exact truncation whose device output is thrown away and regenerated
    /// from its reply bits: recovered from the words
    /// ([`trunc::device_reply_bits`]), then the words again from the bits
    /// and the device's seed, `piece` words at a time from each piece's
    /// index ([`trunc::device_shares_at`]), as the device's held `qkv` does.
    pub fn trunc_regenerated(&mut self, fp: FixedPoint, z: &[u64], piece: usize) -> Res<Vec<u64>> {
        self.run(z, [&[], &[], &[]], |p, v, _| {
            let f = fp.frac_bits();
            let op = p.next_op_id();
            let mut t = vec![0; v.len()];
            p.trunc(f, v, &mut t)?;
            if p.role() != Role::Device {
                return Ok(t);
            }
            let corr = p.earlier_op(op)?;
            let mut bits = vec![0u64; t.len()];
            trunc::device_reply_bits(&corr, f, trunc::FULL, 0, &t, |i, m| bits[i] = m as u64)?;
            let mut again = vec![0; t.len()];
            for (k, chunk) in again.chunks_mut(piece.max(1)).enumerate() {
                let at = k * piece.max(1);
                trunc::device_shares_at(&corr, f, trunc::FULL, at as u64, |i| bits[at + i], chunk)?;
            }
            Ok(again)
        })
    }

    /// Lookup of a plaintext vector: the reconstructed outputs,
    /// `out[i * outputs + o]`.
    pub fn lut(&mut self, sh: LutShape, t: &(dyn Table + Sync), x: &[u64]) -> Res<Vec<u64>> {
        self.run(x, [&[], &[], &[]], |p, v, _| {
            let mut out = vec![0; sh.n * t.outputs()];
            p.luts(&[LutJob { shape: sh, table: t }], v, &mut out)?;
            Ok(out)
        })
    }

    /// Local truncation (no protocol: each share is shifted alone) of a
    /// plaintext vector shared at random.
    pub fn trunc_local(&mut self, fp: FixedPoint, z: &[u64]) -> Vec<u64> {
        let (z0, z1) = self.share(z);
        let f = fp.frac_bits();
        z0.iter()
            .zip(&z1)
            .map(|(&a, &b)| trunc::local(a, f).wrapping_add(trunc::local(b, f)))
            .collect()
    }
}

/// Elementwise sum of two share vectors.
pub fn reconstruct(a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter().zip(b).map(|(x, y)| x.wrapping_add(*y)).collect()
}

/// Runs a composite op with host, device and dealer in three threads over
/// in-memory pipes: `f(party, input share, weights view)` runs on each;
/// returns the reconstructed output and the device's link meter.
pub fn run3<F>(test: u8, session: u64, fp: FixedPoint, x: &[u64], views: [&[u64]; 3], f: F) -> Res<(Vec<u64>, Meter)>
where
    F: Fn(&mut P<'_>, &[u64], &[u64]) -> Res<Vec<u64>> + Sync,
{
    let r = local::run3_mem(fp, &keys(test), session, x, views, &f)?;
    Ok((r.output, r.device))
}

/// The three parties' views of a host-private column vector `g` of
/// deployment `test`, masked by model mask `id`.
pub fn weight_views(test: u8, id: u64, g: &[u64]) -> [Vec<u64>; 3] {
    local::weight_views(&keys(test), id, g)
}

/// Two connected TCP stream pairs on 127.0.0.1, as [`local::run3`] takes
/// them: (host-device, host-dealer).
pub fn tcp_links() -> std::io::Result<(
    (mpcvit_transport::tcp::Tcp, mpcvit_transport::tcp::Tcp),
    (mpcvit_transport::tcp::Tcp, mpcvit_transport::tcp::Tcp),
)> {
    use mpcvit_transport::tcp::Tcp;
    use std::net::{TcpListener, TcpStream};
    let timeout = Some(std::time::Duration::from_secs(60));
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let pair = || -> std::io::Result<(Tcp, Tcp)> {
        let a = TcpStream::connect(addr)?;
        let (b, _) = l.accept()?;
        Ok((Tcp::new(b, timeout)?, Tcp::new(a, timeout)?))
    };
    Ok((pair()?, pair()?))
}
