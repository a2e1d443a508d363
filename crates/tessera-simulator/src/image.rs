//! Card images: the simulated card's memory as a versioned JSON file
//! (spec §6.5).
//!
//! Version 1 layout: `{"format": "tessera-card-image", "version": 1,
//! "cells": {name: hex}, "journal": [[name, hex], ...], "journal_committed":
//! bool}`. Files are written atomically: a temporary file in the same
//! directory, fsync, rename, fsync of the directory.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tessera_card::Field;

use crate::eeprom::Eeprom;

/// The current (and only) image format version.
pub const IMAGE_FORMAT_VERSION: u32 = 1;
const FORMAT_NAME: &str = "tessera-card-image";
/// Largest image file accepted (a card holds a few kilobytes).
const MAX_IMAGE_BYTES: u64 = 1 << 20;

/// Errors reading or writing card images.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a Tessera card image.
    #[error("not a Tessera card image")]
    NotAnImage,
    /// The image was written by a newer version.
    #[error("card image version {0} is not supported (this build reads version {IMAGE_FORMAT_VERSION})")]
    UnsupportedVersion(u32),
    /// The image is damaged.
    #[error("corrupt card image: {0}")]
    Corrupt(String),
}

#[derive(Serialize, Deserialize)]
struct ImageFile {
    format: String,
    version: u32,
    cells: BTreeMap<String, String>,
    #[serde(default)]
    journal: Vec<(String, String)>,
    #[serde(default)]
    journal_committed: bool,
}

fn field(name: &str) -> Result<Field, ImageError> {
    Field::from_name(name).ok_or_else(|| ImageError::Corrupt(format!("unknown field {name:?}")))
}

fn unhex(name: &str, v: &str) -> Result<Vec<u8>, ImageError> {
    hex::decode(v).map_err(|_| ImageError::Corrupt(format!("field {name:?} is not hex")))
}

/// Serializes an EEPROM.
pub fn to_bytes(e: &Eeprom) -> Vec<u8> {
    let img = ImageFile {
        format: FORMAT_NAME.into(),
        version: IMAGE_FORMAT_VERSION,
        cells: e.cells.iter().map(|(f, v)| (f.name(), hex::encode(v))).collect(),
        journal: e.journal.iter().map(|(f, v)| (f.name(), hex::encode(v))).collect(),
        journal_committed: e.journal_committed,
    };
    let mut out = serde_json::to_vec_pretty(&img).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Parses an image.
///
/// # Errors
/// [`ImageError::NotAnImage`], [`ImageError::UnsupportedVersion`] or
/// [`ImageError::Corrupt`].
pub fn from_bytes(bytes: &[u8]) -> Result<Eeprom, ImageError> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| ImageError::NotAnImage)?;
    if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT_NAME) {
        return Err(ImageError::NotAnImage);
    }
    match v.get("version").and_then(|v| v.as_u64()) {
        Some(1) => {}
        Some(n) => return Err(ImageError::UnsupportedVersion(u32::try_from(n).unwrap_or(u32::MAX))),
        None => return Err(ImageError::NotAnImage),
    }
    let img: ImageFile = serde_json::from_value(v).map_err(|e| ImageError::Corrupt(e.to_string()))?;
    let mut cells = BTreeMap::new();
    for (name, val) in &img.cells {
        cells.insert(field(name)?, unhex(name, val)?);
    }
    let mut journal = Vec::new();
    for (name, val) in &img.journal {
        journal.push((field(name)?, unhex(name, val)?));
    }
    Ok(Eeprom::from_parts(cells, journal, img.journal_committed))
}

/// Loads an image file.
///
/// # Errors
/// [`ImageError`] on I/O failure or a bad image.
pub fn load(path: &Path) -> Result<Eeprom, ImageError> {
    let io = |source| ImageError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_IMAGE_BYTES {
        return Err(ImageError::Corrupt("file too large".into()));
    }
    from_bytes(&fs::read(path).map_err(io)?)
}

/// Writes an image file atomically.
///
/// # Errors
/// [`ImageError::Io`]; the previous file is then untouched.
pub fn save(path: &Path, e: &Eeprom) -> Result<(), ImageError> {
    write_atomic(path, &to_bytes(e))
}

/// Replaces `path` with `bytes` atomically (temp file, fsync, rename,
/// directory fsync). The file is `0600`; the temporary file is created
/// exclusively under a fresh name, so it never follows a symlink.
///
/// # Errors
/// [`ImageError::Io`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    tessera_crypto::files::write_atomic(path, bytes).map_err(|source| ImageError::Io {
        path: path.to_owned(),
        source,
    })
}
