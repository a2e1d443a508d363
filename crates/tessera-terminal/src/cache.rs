//! Verified profiles cached by digest, so a returning card skips READ
//! PROFILE (spec §4.3, note on caching).

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;

use tessera_crypto::sign::{profile_digest, IssuerPublicKey};
use tessera_protocol::profile::SignedProfile;

/// Verified signed profiles keyed by the SHA-256 of their blob; optionally
/// mirrored in a directory (one file per digest) so the cache survives the
/// terminal process. Files are re-verified when loaded.
#[derive(Debug, Default)]
pub struct ProfileCache {
    map: HashMap<[u8; 32], SignedProfile>,
    dir: Option<PathBuf>,
}

impl ProfileCache {
    /// An empty in-memory cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// A cache mirrored in `dir` (created if missing, owner-only: the
    /// profiles are personal data). Owner-only means modes `0700`/`0600`
    /// on Unix; elsewhere (Windows) the directory and files inherit their
    /// parent's ACL and nothing more is set.
    pub fn in_dir(dir: PathBuf) -> Self {
        let _ = fs::create_dir_all(&dir);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
        }
        Self {
            map: HashMap::new(),
            dir: Some(dir),
        }
    }

    /// The verified profile with this digest, if known. A file in the cache
    /// directory is accepted only if its digest matches and the issuer
    /// signature verifies.
    pub fn get(&mut self, digest: &[u8; 32], issuer: &IssuerPublicKey) -> Option<&SignedProfile> {
        if !self.map.contains_key(digest) {
            let dir = self.dir.as_ref()?;
            let blob = fs::read(dir.join(hex::encode(digest))).ok()?;
            if profile_digest(&blob) != *digest {
                return None;
            }
            let sp = SignedProfile::parse(&blob).ok()?;
            issuer.verify(&sp).ok()?;
            self.map.insert(*digest, sp);
        }
        self.map.get(digest)
    }

    /// Remembers a profile the caller has verified.
    pub fn insert(&mut self, digest: [u8; 32], profile: SignedProfile) {
        if let Some(dir) = &self.dir {
            // Best effort: a cache write failure only costs a READ PROFILE.
            // Owner-only from creation: the profile is personal data.
            let mut opts = fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let _ = opts
                .open(dir.join(hex::encode(digest)))
                .and_then(|mut f| std::io::Write::write_all(&mut f, &profile.to_bytes()));
        }
        self.map.insert(digest, profile);
    }

    /// Forgets everything in memory (the directory stays).
    pub fn clear_memory(&mut self) {
        self.map.clear();
    }

    /// Number of profiles in memory.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the in-memory cache is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
