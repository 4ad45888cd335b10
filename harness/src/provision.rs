//! `mpcvit provision`: the device's provisioning blob of a model for a
//! deployment (its weights minus the masks the host key derives).

use crate::float::write_atomic;
use crate::keys::{HOST_KEY, read_key};
use mpcvit_core::FixedPoint;
use mpcvit_core::model::ModelView;
use mpcvit_core::prg::Seed;
use mpcvit_core::provision;
use mpcvit_core::session;
use std::path::{Path, PathBuf};

/// Options of `mpcvit provision`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProvisionArgs {
    /// The model file (core format).
    #[arg(long)]
    pub model: PathBuf,
    /// Directory with `host.key` (the masks come from it and the model).
    #[arg(long)]
    pub keys: PathBuf,
    /// Where to write the device's provisioning blob.
    #[arg(long)]
    pub out: PathBuf,
}

/// Reads and checks a model file.
pub fn read_model(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = crate::files::read_bounded(path, "model", crate::files::MAX_MODEL)?;
    ModelView::parse(&bytes).map_err(|e| format!("{}: not a usable model file: {e}", path.display()))?;
    Ok(bytes)
}

/// The provisioning blob of a model for the deployment of `host_key`.
pub fn blob_for(model: &[u8], host_key: &Seed) -> Result<Vec<u8>, String> {
    let view = ModelView::parse(model).map_err(|e| e.to_string())?;
    let fp = FixedPoint::new(view.frac_bits()).map_err(|e| e.to_string())?;
    let seed = session::model_seed(host_key, provision::model_crc(model));
    mpcvit_host::device_blob(model, fp, &seed).map_err(|e| e.to_string())
}

/// `mpcvit provision`.
pub fn provision(a: &ProvisionArgs) -> Result<(), String> {
    let model = read_model(&a.model)?;
    let key = read_key(&a.keys.join(HOST_KEY))?;
    let blob = blob_for(&model, &key)?;
    write_atomic(&a.out, &blob)?;
    println!("wrote {} ({} bytes)", a.out.display(), blob.len());
    Ok(())
}
