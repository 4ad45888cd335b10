//! The three parties' views of a model's weights: the host's fixed-point
//! encodings `W`, the device's `W - B` (its provisioning blob) and the
//! dealer's masks `B`, with `B` expanded from the per-model mask seed.

use crate::error::LoadError;
use mpcvit_core::FixedPoint;
use mpcvit_core::model::{Arch, ModelView};
use mpcvit_core::ops::vit::{self, Weights, Wid};
use mpcvit_core::prg::Seed;
use mpcvit_core::protocol::linear::model_mask;
use mpcvit_core::provision::{self, BlobView};
use std::collections::HashMap;

/// One party's weights, by id.
#[derive(Clone, Default)]
pub struct WeightMap(pub HashMap<Wid, Vec<u64>>);

impl std::fmt::Debug for WeightMap {
    // the words are the host's weights or their masks: never printed
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeightMap({} tensors, <redacted>)", self.0.len())
    }
}

impl Weights for WeightMap {
    fn get(&self, id: Wid) -> &[u64] {
        self.0.get(&id).map_or(&[], Vec::as_slice)
    }
}

/// Refuses a model the forward pass cannot run at `fp`
/// ([`vit::check_frac_bits`]).
fn check(m: &ModelView<'_>, fp: FixedPoint) -> Result<(), LoadError> {
    vit::check_frac_bits(&m.arch(), m, fp.frac_bits()).map_err(|_| LoadError::FracBits(fp.frac_bits()))
}

/// The host's encoding of weight `id`, its range checked
/// ([`vit::check_weight_range`]).
fn encode(m: &ModelView<'_>, fp: FixedPoint, id: Wid) -> Result<Vec<u64>, LoadError> {
    let a = m.arch();
    let mut w = vec![0; id.len(&a)];
    vit::encode_weight(m, fp, id, &mut w)?;
    vit::check_weight_range(&a, fp, id, &w).map_err(|_| LoadError::Range {
        id,
        frac_bits: fp.frac_bits(),
    })?;
    Ok(w)
}

/// The mask `B` of weight `id`.
fn mask(a: &Arch, model_seed: &Seed, id: Wid) -> Vec<u64> {
    let mut b = vec![0; id.len(a)];
    model_mask(model_seed, id.mask_id()).fill(&mut b);
    b
}

/// The host's, the device's and the dealer's views of a model, in that
/// order. `model_seed` is the host's per-model mask seed (shared with the
/// dealer, `core::session::model_seed`).
pub fn weight_maps(m: &ModelView<'_>, fp: FixedPoint, model_seed: &Seed) -> Result<[WeightMap; 3], LoadError> {
    let a = m.arch();
    check(m, fp)?;
    let (mut h, mut d, mut dl) = (WeightMap::default(), WeightMap::default(), WeightMap::default());
    for id in Wid::all(&a) {
        let w = encode(m, fp, id)?;
        if !id.host_only() {
            let b = mask(&a, model_seed, id);
            d.0.insert(id, w.iter().zip(&b).map(|(x, y)| x.wrapping_sub(*y)).collect());
            dl.0.insert(id, b);
        }
        h.0.insert(id, w);
    }
    Ok([h, d, dl])
}

impl WeightMap {
    /// The host's view: the fixed-point encodings with their folds.
    pub fn host(m: &ModelView<'_>, fp: FixedPoint) -> Result<Self, LoadError> {
        let a = m.arch();
        check(m, fp)?;
        let mut h = WeightMap::default();
        for id in Wid::all(&a) {
            h.0.insert(id, encode(m, fp, id)?);
        }
        Ok(h)
    }

    /// The dealer's view: the masks `B` of every host-private weight, from
    /// the per-model mask seed (no weights needed).
    pub fn dealer(a: &Arch, model_seed: &Seed) -> Self {
        Self(
            Wid::all(a)
                .filter(|w| !w.host_only())
                .map(|w| (w, mask(a, model_seed, w)))
                .collect(),
        )
    }

    /// The device's view read from its provisioning blob.
    pub fn from_blob(b: &BlobView<'_>) -> Self {
        let a = b.arch();
        Self(
            Wid::all(&a)
                .filter(|w| !w.host_only())
                .map(|w| (w, b.words(w).collect()))
                .collect(),
        )
    }
}

/// The device's provisioning blob for a model file: its `W - B` words.
pub fn device_blob(model_file: &[u8], fp: FixedPoint, model_seed: &Seed) -> Result<Vec<u8>, LoadError> {
    let m = ModelView::parse(model_file)?;
    let a = m.arch();
    let host = WeightMap::host(&m, fp)?;
    let words = Wid::all(&a).filter(|w| !w.host_only()).flat_map(|id| {
        let b = mask(&a, model_seed, id);
        let w = host.get(id).to_vec();
        w.into_iter().zip(b).map(|(x, y)| x.wrapping_sub(y))
    });
    let mut out = vec![0; provision::blob_len(&a)];
    provision::encode(
        &a,
        fp.frac_bits(),
        (
            provision::model_crc(model_file),
            mpcvit_core::session::key_check(model_seed),
        ),
        &m,
        words,
        &mut out,
    )?;
    Ok(out)
}
