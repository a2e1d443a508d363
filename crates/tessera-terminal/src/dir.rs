//! A till's directory: every file a till keeps, how each is loaded and
//! checked, and a [`Till`] opened from it — what `tessera pos` runs on, for
//! any POS software to run on too.
//!
//! | file | what | checked |
//! |---|---|---|
//! | `journal.sqlite` | the till's journal ([`Journal`]) | its terminal id against the keys' |
//! | `policy.toml` + `.sig` | the till policy the office signed | issuer signature; refused if edited or unsigned; absent: the shipped default |
//! | `hotlist.toml` + `.sig` | the office's hotlist | issuer signature; refused if edited or unsigned; absent: empty |
//! | `campaigns.toml` + `.sig` | the signed campaigns | issuer signature; absent: none |
//! | `profiles/` | the profile cache ([`ProfileCache`]) | each profile's issuer signature, when read |
//! | `profile-updates/<CARD>.json` | signed profiles waiting for their card | the card checks the issuer MAC |
//! | `settled.json`, `unblocks.json`, `key-updates.json`, `adjustments.json` | issuer decisions waiting for their card | the card checks the issuer MAC |
//! | `time_zone` | the till's time zone, an IANA name (optional: the system's, `TZ` honoured) | refused when the zone is unknown |
//! | `online.toml` | when the till asks the office online, how long it waits, what it does without an answer ([`TerminalDir::online_settings`]; optional: the defaults) | refused when malformed (unknown keys included) |
//! | `shift.json` | when the open shift started (`tessera pos shift open`) | written by the till |
//!
//! The directory is created `0700` (it holds personal data); the journal is
//! `0600`. Files the office signs are refused when edited
//! ([`DirError::Refused`]); files of per-card issuer decisions are skipped
//! entry by entry when unreadable, because the card verifies each one
//! anyway and an edited entry can only make it refuse.
//!
//! ```no_run
//! use tessera_crypto::keys::IssuerKeys;
//! use tessera_terminal::dir::TerminalDir;
//! use tessera_terminal::{SoftwareSam, SystemClock};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = IssuerKeys::test()?.terminal_keys(); // a till's bundle in real life
//! let dir = TerminalDir::new("/var/lib/tessera/till-7");
//! let issuer = keys.issuer_public.clone();
//! let till = dir.open_till(SoftwareSam::new(keys), &issuer, SystemClock, 7, Some(7), 1)?;
//! # drop(till);
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

use tessera_crypto::sign::IssuerPublicKey;

use crate::journal::{Journal, JournalError};
use crate::offers::CampaignSet;
use crate::policy::{Hotlist, Policy};
use crate::till::{ProfileUpdate, SettledCounter, Till, TillConfig};
use crate::{Adjustment, Clock, ProfileCache, Sam, Terminal, Unblock};

/// Why a till's directory could not be opened. Each names the file and
/// what the operator should do; nothing was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirError {
    /// A file or the directory could not be read or created: check the
    /// path and its permissions.
    #[error("{what}: {source}")]
    Io {
        /// The file or directory.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The journal could not be opened (corrupt, of a newer version…).
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    /// The journal belongs to another terminal than the keys: the wrong
    /// directory or the wrong bundle was given.
    #[error("the journal in {dir} is terminal {found}'s, the keys are terminal {required}'s")]
    OtherTerminal {
        /// The directory.
        dir: String,
        /// The journal's terminal.
        found: u32,
        /// The keys' terminal.
        required: u32,
    },
    /// The file is not a terminal bundle: give the file `tessera office
    /// export-terminal` wrote for this till.
    #[error("keys {0}: not a terminal bundle")]
    NotABundle(String),
    /// A file the office signs is there without its signature file.
    #[error("{what}: the signature file {sig} is missing — {fix}")]
    Unsigned {
        /// What the file is (`policy`, `hotlist`, `campaigns`).
        what: &'static str,
        /// The missing signature file's name.
        sig: &'static str,
        /// What to do.
        fix: &'static str,
    },
    /// The file `time_zone` names a zone the time zone database lacks.
    #[error("time_zone: {0}")]
    TimeZone(String),
    /// A file the office signs does not verify (edited, or of another
    /// issuer): it is never applied.
    #[error("{what} refused: {why} — {fix}")]
    Refused {
        /// What the file is.
        what: &'static str,
        /// Why it was refused.
        why: String,
        /// What to do.
        fix: &'static str,
    },
}

/// Reads a till's key bundle (`tessera office export-terminal`).
///
/// # Errors
/// [`DirError::Io`] when it cannot be read; [`DirError::Refused`] when it
/// is not a terminal bundle.
pub fn load_bundle(path: &Path) -> Result<tessera_crypto::keys::TerminalBundle, DirError> {
    let what = format!("keys {}", path.display());
    let text = std::fs::read_to_string(path).map_err(io(what))?;
    tessera_crypto::keys::TerminalBundle::from_json(&text).map_err(|_| DirError::NotABundle(path.display().to_string()))
}

/// Writes generated documents (man pages, completion scripts) into
/// `dir`, creating it when missing: each file replaced atomically, with
/// its plain name (a name with a path separator is refused).
///
/// # Errors
/// [`DirError::Io`] naming the directory or file.
pub fn write_documents(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<usize, DirError> {
    std::fs::create_dir_all(dir).map_err(io(dir.display().to_string()))?;
    for (name, bytes) in files {
        if name.contains('/') || name.contains('\\') || name.starts_with('.') {
            return Err(DirError::Io {
                what: name.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a plain file name"),
            });
        }
        let path = dir.join(name);
        crate::settlement::write_atomic(&path, bytes).map_err(io(path.display().to_string()))?;
    }
    Ok(files.len())
}

/// A till's directory (see the module documentation).
#[derive(Clone, Debug)]
pub struct TerminalDir {
    path: PathBuf,
}

fn refused(what: &'static str, fix: &'static str, why: impl std::fmt::Display) -> DirError {
    DirError::Refused {
        what,
        why: why.to_string(),
        fix,
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DirError {
    let what = what.into();
    move |source| DirError::Io { what, source }
}

impl TerminalDir {
    /// The directory at `path` (nothing is read or created yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The journal's file.
    pub fn journal_path(&self) -> PathBuf {
        self.path.join("journal.sqlite")
    }

    /// Creates the directory (`0700`) if it does not exist.
    ///
    /// The mode is set on Unix only. Elsewhere (Windows) the directory gets
    /// the access control list inherited from its parent: put the till's
    /// directory under the till account's profile (or give it an ACL for
    /// that account only) to keep it private.
    ///
    /// # Errors
    /// [`DirError::Io`].
    pub fn create(&self) -> Result<(), DirError> {
        if self.path.exists() {
            return Ok(());
        }
        let what = format!("terminal directory {}", self.path.display());
        std::fs::create_dir_all(&self.path).map_err(io(what.clone()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o700)).map_err(io(what))?;
        }
        // Not Unix: nothing to set; the inherited ACL applies (see above).
        Ok(())
    }

    /// Opens the journal (creating the directory and the journal when
    /// new). With `required` (the terminal id of the keys in use), a
    /// journal of another terminal is refused and a new one gets that id;
    /// without, a new journal gets `default_id`.
    ///
    /// # Errors
    /// [`DirError::OtherTerminal`], [`DirError::Journal`], [`DirError::Io`].
    pub fn open_journal(&self, default_id: u32, required: Option<u32>) -> Result<Journal, DirError> {
        self.create()?;
        let path = self.journal_path();
        let found = Journal::terminal_id_of(&path)?;
        if let (Some(found), Some(required)) = (found, required) {
            if found != required {
                return Err(DirError::OtherTerminal {
                    dir: self.path.display().to_string(),
                    found,
                    required,
                });
            }
        }
        Ok(Journal::open(&path, found.or(required).unwrap_or(default_id))?)
    }

    /// The policy, hotlist and campaigns, each verified against the
    /// issuer's signature; an absent file is the shipped default policy,
    /// an empty hotlist, no campaigns.
    ///
    /// # Errors
    /// [`DirError::Unsigned`] or [`DirError::Refused`] for a file the
    /// office did not sign as it is; [`DirError::Io`].
    pub fn load_config(&self, issuer: &IssuerPublicKey) -> Result<TillConfig, DirError> {
        // A file the office signed that does not verify under the keys
        // the till was given: on the published test keys, the keys are the
        // cause, not the file.
        let on_test_keys = tessera_crypto::keys::IssuerKeys::test()
            .map(|k| k.terminal_keys().issuer_public == *issuer)
            .unwrap_or(false);
        macro_rules! on_test_keys {
            ($else:literal) => {
                concat!(
                    "this till runs on the published TEST keys (--test-keys), under which a file the office signed with its own keys never verifies: give the till its key bundle (--keys BUNDLE.json from `tessera office export-terminal`); else ",
                    $else
                )
            };
        }
        let (sync_fix, fresh_fix, policy_fix) = if on_test_keys {
            (
                on_test_keys!("run `tessera pos sync`"),
                on_test_keys!("ask the office for a fresh file"),
                on_test_keys!("ask the office for a signed policy"),
            )
        } else {
            (
                "run `tessera pos sync` (or check that --keys is this office's bundle)",
                "ask the office for a fresh file (or check that --keys is this office's bundle)",
                "ask the office for a signed policy (or check that --keys is this office's bundle)",
            )
        };
        const SYNC: &str = "run `tessera pos sync`";
        const FRESH: &str = "ask the office for a fresh file";
        let policy = match self.signed(
            "policy.toml",
            "policy.toml.sig",
            "policy",
            "ask the office to sign the policy",
        )? {
            Some((body, sig)) => {
                Policy::load_signed(&body, sig.trim(), issuer).map_err(|e| refused("policy", policy_fix, e))?
            }
            None => Policy::default_policy(),
        };
        let hotlist = match self.signed("hotlist.toml", "hotlist.toml.sig", "hotlist", SYNC)? {
            Some((body, sig)) => {
                let text = String::from_utf8(body).map_err(|e| refused("hotlist", SYNC, e))?;
                Hotlist::load_signed(&text, &sig, issuer).map_err(|e| refused("hotlist", sync_fix, e))?
            }
            None => Hotlist::empty(),
        };
        let campaigns = match self.signed("campaigns.toml", "campaigns.toml.sig", "campaigns", FRESH)? {
            Some((body, sig)) => {
                CampaignSet::load_signed(&body, sig.trim(), issuer).map_err(|e| refused("campaigns", fresh_fix, e))?
            }
            None => CampaignSet::empty(),
        };
        Ok(TillConfig {
            policy,
            hotlist,
            campaigns,
            online: self.online_settings()?,
        })
    }

    /// The till's online settings from `online.toml` (card application
    /// 2.2; [`crate::till::OnlineSettings`]): `mode = "referred" | "always"`,
    /// `floor_points = N`, `timeout_ms = N` (100 to 60,000), `without_answer
    /// = "refer" | "decline"`, each optional; absent file: the defaults.
    /// They apply only when the till has an office to ask (`pos … --online`,
    /// `--voice`); the office's answer is checked by the card whatever they
    /// say, so the file is the till's own, not signed.
    ///
    /// # Errors
    /// [`DirError::Io`]; [`DirError::Refused`] for a malformed file or an
    /// unknown key or value.
    pub fn online_settings(&self) -> Result<crate::till::OnlineSettings, DirError> {
        use crate::till::{OnlineMode, OnlineSettings, WithoutAnswer};
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            mode: Option<String>,
            floor_points: Option<u32>,
            timeout_ms: Option<u64>,
            without_answer: Option<String>,
        }
        const FIX: &str = "fix online.toml (mode, floor_points, timeout_ms, without_answer) or remove it";
        let path = self.path.join("online.toml");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OnlineSettings::default()),
            Err(e) => return Err(io("online.toml")(e)),
        };
        let f: File = toml::from_str(&text).map_err(|e| refused("online.toml", FIX, e.message().to_owned()))?;
        let mut s = OnlineSettings::default();
        match f.mode.as_deref() {
            None | Some("referred") => {}
            Some("always") => s.mode = OnlineMode::Always,
            Some(other) => {
                return Err(refused(
                    "online.toml",
                    FIX,
                    format!("mode {other:?}: referred or always"),
                ))
            }
        }
        match f.without_answer.as_deref() {
            None | Some("refer") => {}
            Some("decline") => s.without_answer = WithoutAnswer::Decline,
            Some(other) => {
                return Err(refused(
                    "online.toml",
                    FIX,
                    format!("without_answer {other:?}: refer or decline"),
                ))
            }
        }
        if let Some(ms) = f.timeout_ms {
            if !(100..=60_000).contains(&ms) {
                return Err(refused("online.toml", FIX, format!("timeout_ms {ms}: 100 to 60000")));
            }
            s.timeout = std::time::Duration::from_millis(ms);
        }
        s.floor_points = f.floor_points;
        Ok(s)
    }

    /// A signed file and its signature, or `None` when the file is absent;
    /// `unsigned` is what to do when the signature file is missing.
    fn signed(
        &self,
        file: &'static str,
        sig: &'static str,
        what: &'static str,
        unsigned: &'static str,
    ) -> Result<Option<(Vec<u8>, String)>, DirError> {
        let path = self.path.join(file);
        if !path.exists() {
            return Ok(None);
        }
        let body = std::fs::read(&path).map_err(io(what))?;
        let signature = std::fs::read_to_string(self.path.join(sig)).map_err(|_| DirError::Unsigned {
            what,
            sig,
            fix: unsigned,
        })?;
        Ok(Some((body, signature)))
    }

    /// The policy's money format (currency, decimals) for reports that
    /// have no keys to check its signature (`pos history`, `pos totals`):
    /// `policy.toml` parsed **without** its signature, or the default. It
    /// formats amounts already journaled and is never used to decide.
    ///
    /// # Errors
    /// [`DirError::Refused`] for a file that does not parse.
    pub fn display_policy(&self) -> Result<Policy, DirError> {
        let path = self.path.join("policy.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                Policy::from_toml(&text).map_err(|e| refused("policy", "ask the office for a signed policy", e))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Policy::default_policy()),
            Err(e) => Err(io("policy")(e)),
        }
    }

    /// The till's time zone: the IANA name in the file `time_zone` of the
    /// directory when there is one (e.g. `Europe/Paris`), else the system's
    /// (`TZ`, then `/etc/localtime`, else UTC).
    ///
    /// # Errors
    /// [`DirError::TimeZone`] for a name the time zone database lacks (the
    /// till then refuses to print times it cannot place);
    /// [`DirError::Io`] for an unreadable file.
    pub fn time_zone(&self) -> Result<tessera_rules::display::Zone, DirError> {
        let path = self.path.join("time_zone");
        match std::fs::read_to_string(&path) {
            Ok(name) => tessera_rules::display::Zone::named(name.trim()).map_err(|e| DirError::TimeZone(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(tessera_rules::display::Zone::system()),
            Err(e) => Err(DirError::Io {
                what: "time_zone".into(),
                source: e,
            }),
        }
    }

    /// The open shift's start (Unix seconds), from `shift.json`; `None`
    /// when no shift is open.
    ///
    /// # Errors
    /// [`DirError::Io`]; [`DirError::Refused`] for an unreadable file.
    pub fn shift_opened(&self) -> Result<Option<u32>, DirError> {
        let path = self.path.join("shift.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("shift")(e)),
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| refused("shift.json", "remove it and open a new shift", e))?;
        v.get("opened_at")
            .and_then(serde_json::Value::as_u64)
            .and_then(|t| u32::try_from(t).ok())
            .map(Some)
            .ok_or_else(|| refused("shift.json", "remove it and open a new shift", "no opened_at"))
    }

    /// Records that a shift opened at `at` (`shift.json`), or, with
    /// `None`, that none is open.
    ///
    /// # Errors
    /// [`DirError::Io`]; the file is then unchanged.
    pub fn set_shift(&self, at: Option<u32>) -> Result<(), DirError> {
        self.create()?;
        let path = self.path.join("shift.json");
        match at {
            Some(t) => {
                let doc = serde_json::json!({"version": 1, "opened_at": t});
                crate::settlement::write_atomic(&path, format!("{doc}\n").as_bytes()).map_err(io("shift"))
            }
            None => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("shift")(e)),
                _ => Ok(()),
            },
        }
    }

    /// The profile cache (`profiles/`).
    pub fn profile_cache(&self) -> ProfileCache {
        ProfileCache::in_dir(self.path.join("profiles"))
    }

    /// Opens the till: journal, signed configuration, profile cache, and
    /// the issuer decisions waiting for their cards. `required` is the
    /// terminal id of the keys (a bundle's), `default_id` the id of a new
    /// journal without one, `store` the store the till stands in.
    ///
    /// # Errors
    /// As [`TerminalDir::open_journal`] and [`TerminalDir::load_config`].
    pub fn open_till<S: Sam, C: Clock>(
        &self,
        sam: S,
        issuer: &IssuerPublicKey,
        clock: C,
        default_id: u32,
        required: Option<u32>,
        store: u32,
    ) -> Result<Till<S, C>, DirError> {
        let journal = self.open_journal(default_id, required)?;
        let config = self.load_config(issuer)?;
        let terminal = Terminal::new(sam, clock, journal.terminal_id())
            .with_store(store)
            .with_cache(self.profile_cache());
        let mut till = Till::new(terminal, journal, config)?;
        till.set_profile_updates(self.profile_updates());
        till.set_settled(self.settled());
        till.terminal_mut().set_unblocks(self.unblocks());
        till.set_key_updates(self.key_updates());
        till.set_adjustments(self.adjustments());
        Ok(till)
    }

    /// Profile updates fetched by sync (`profile-updates/<CARD>.json`: the
    /// signed blob and the issuer's MAC per key version). Unreadable files
    /// are skipped: the terminal verifies every update again before writing
    /// it to a card, and the card checks the issuer MAC.
    pub fn profile_updates(&self) -> Vec<ProfileUpdate> {
        let Ok(entries) = std::fs::read_dir(self.path.join("profile-updates")) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .filter_map(|doc| {
                let blob = hex::decode(doc.get("profile")?.as_str()?).ok()?;
                let profile = tessera_protocol::profile::SignedProfile::parse(&blob).ok()?;
                Some(
                    macs_of(doc.get("issuer_macs")?)
                        .into_iter()
                        .map(|(key_version, issuer_mac)| ProfileUpdate {
                            key_version,
                            profile: profile.clone(),
                            issuer_mac,
                        })
                        .collect::<Vec<_>>(),
                )
            })
            .flatten()
            .collect()
    }

    /// Settled counters fetched by sync (`settled.json`), each with the
    /// issuer's MAC for each key version the card may hold.
    pub fn settled(&self) -> Vec<([u8; 8], SettledCounter)> {
        self.card_map("settled.json", |v| {
            per_version(v, "counter", |counter, key_version, issuer_mac| SettledCounter {
                key_version,
                counter,
                issuer_mac,
            })
        })
    }

    /// KEY UPDATEs fetched by sync (`key-updates.json`).
    pub fn key_updates(&self) -> Vec<([u8; 8], tessera_protocol::messages::KeyUpdateCommand)> {
        self.card_map("key-updates.json", |v| {
            (|| {
                Some(tessera_protocol::messages::KeyUpdateCommand {
                    key_version: u8::try_from(v.get("key_version")?.as_u64()?).ok()?,
                    ciphertext: hex::decode(v.get("ciphertext")?.as_str()?).ok()?,
                    issuer_mac: mac_of(v.get("issuer_mac")?)?,
                })
            })()
            .into_iter()
            .collect()
        })
    }

    /// Issuer adjustments fetched by sync (`adjustments.json`, v2.1): one
    /// per card, sequence and key version. Unreadable entries are skipped:
    /// the card checks every issuer MAC.
    pub fn adjustments(&self) -> Vec<Adjustment> {
        let Ok(text) = std::fs::read_to_string(self.path.join("adjustments.json")) else {
            return Vec::new();
        };
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(&text) else {
            return Vec::new();
        };
        let Some(list) = doc.get("adjustments").and_then(|a| a.as_array()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for a in list {
            let mut card_id = [0u8; 8];
            let Some(card) = a.get("card_id").and_then(|c| c.as_str()) else {
                continue;
            };
            if hex::decode_to_slice(card, &mut card_id).is_err() {
                continue;
            }
            let kind = a
                .get("kind")
                .and_then(|k| k.as_str())
                .and_then(crate::journal::tx_kind)
                .filter(|k| k.is_adjustment());
            let num = |f: &str| {
                a.get(f)
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok())
            };
            let (Some(kind), Some(seq), Some(points)) = (kind, num("seq"), num("points")) else {
                continue;
            };
            for (key_version, issuer_mac) in a.get("issuer_macs").map(macs_of).unwrap_or_default() {
                out.push(Adjustment {
                    card_id,
                    key_version,
                    seq,
                    kind,
                    points,
                    issuer_mac,
                });
            }
        }
        out
    }

    /// Issuer UNBLOCKs fetched by sync (`unblocks.json`).
    pub fn unblocks(&self) -> Vec<([u8; 8], Unblock)> {
        self.card_map("unblocks.json", |v| {
            per_version(v, "seq", |seq, key_version, issuer_mac| Unblock {
                key_version,
                seq,
                issuer_mac,
            })
        })
    }

    /// Rewrites `unblocks.json` with the unblocks still waiting for their
    /// card (after a tap delivered some): per card, the sequence and one
    /// issuer MAC per key version the card may hold, the shape sync writes
    /// and [`TerminalDir::unblocks`] reads.
    ///
    /// # Errors
    /// [`DirError::Io`]; the file is then unchanged.
    pub fn write_unblocks(&self, unblocks: &[([u8; 8], Unblock)]) -> Result<(), DirError> {
        let mut cards = serde_json::Map::new();
        for (c, u) in unblocks {
            let entry = cards
                .entry(hex::encode_upper(c))
                .or_insert_with(|| serde_json::json!({"seq": u.seq, "issuer_macs": {}}));
            if let Some(macs) = entry.get_mut("issuer_macs").and_then(serde_json::Value::as_object_mut) {
                macs.insert(u.key_version.to_string(), serde_json::json!(hex::encode(u.issuer_mac)));
            }
        }
        let doc = serde_json::json!({"version": 2, "cards": cards});
        crate::settlement::write_atomic(&self.path.join("unblocks.json"), format!("{doc:#}\n").as_bytes())
            .map_err(io("unblocks"))
    }

    /// Per-card issuer decisions in a JSON file, `{"cards": {"<CARD>":
    /// {…}}}`. A missing or unreadable file means none.
    fn card_map<T>(&self, file: &str, f: impl Fn(&serde_json::Value) -> Vec<T>) -> Vec<([u8; 8], T)> {
        let Ok(text) = std::fs::read_to_string(self.path.join(file)) else {
            return Vec::new();
        };
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(&text) else {
            return Vec::new();
        };
        let Some(cards) = doc.get("cards").and_then(|c| c.as_object()) else {
            return Vec::new();
        };
        cards
            .iter()
            .filter_map(|(id, v)| {
                let mut card = [0u8; 8];
                hex::decode_to_slice(id, &mut card).ok()?;
                Some(f(v).into_iter().map(move |t| (card, t)))
            })
            .flatten()
            .collect()
    }
}

/// `{"<key version>": "<MAC hex>", …}`: unreadable entries are skipped.
fn macs_of(v: &serde_json::Value) -> Vec<(u8, [u8; 8])> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, mac_of(v)?)))
                .collect()
        })
        .unwrap_or_default()
}

fn mac_of(v: &serde_json::Value) -> Option<[u8; 8]> {
    let mut mac = [0u8; 8];
    hex::decode_to_slice(v.as_str()?, &mut mac).ok()?;
    Some(mac)
}

/// One issuer decision per key version: `{"<number field>": N,
/// "issuer_macs": {"<version>": "<MAC>"}}` gives `make(N, version, MAC)`
/// for each MAC.
fn per_version<T>(v: &serde_json::Value, field: &str, make: impl Fn(u32, u8, [u8; 8]) -> T) -> Vec<T> {
    let Some(n) = v
        .get(field)
        .and_then(serde_json::Value::as_u64)
        .and_then(|c| u32::try_from(c).ok())
    else {
        return Vec::new();
    };
    v.get("issuer_macs")
        .map(macs_of)
        .unwrap_or_default()
        .into_iter()
        .map(|(version, mac)| make(n, version, mac))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::offers::sign_campaigns;
    use tessera_crypto::keys::IssuerKeys;

    fn dir() -> (tempfile::TempDir, TerminalDir, IssuerKeys) {
        let tmp = tempfile::tempdir().unwrap();
        let d = TerminalDir::new(tmp.path().join("till"));
        (tmp, d, IssuerKeys::test().unwrap())
    }

    #[test]
    fn a_new_directory_is_private_and_its_journal_bound_to_the_keys() {
        let (_tmp, d, _) = dir();
        let j = d.open_journal(9, Some(7)).unwrap();
        assert_eq!(j.terminal_id(), 7);
        drop(j);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        // Another terminal's keys on this journal: refused.
        let Err(err) = d.open_journal(9, Some(8)) else {
            panic!("another terminal's journal opened");
        };
        assert!(
            matches!(
                err,
                DirError::OtherTerminal {
                    found: 7,
                    required: 8,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(d.open_journal(9, None).unwrap().terminal_id(), 7);
    }

    #[test]
    fn signed_files_load_and_edited_or_unsigned_ones_are_refused() {
        let (_tmp, d, keys) = dir();
        d.create().unwrap();
        let issuer = keys.terminal_keys().issuer_public;
        // Nothing there: the defaults.
        let c = d.load_config(&issuer).unwrap();
        assert_eq!(c.policy.version, Policy::default_policy().version);
        let text = crate::policy::DEFAULT_POLICY_TOML.replacen("version = 1", "version = 4", 1);
        assert_ne!(text, crate::policy::DEFAULT_POLICY_TOML);
        std::fs::write(d.path().join("policy.toml"), &text).unwrap();
        let err = d.load_config(&issuer).unwrap_err();
        assert!(matches!(err, DirError::Unsigned { what: "policy", .. }), "{err}");
        let sig = sign_campaigns(text.as_bytes(), &keys.issuer).unwrap();
        std::fs::write(d.path().join("policy.toml.sig"), &sig).unwrap();
        assert_eq!(d.load_config(&issuer).unwrap().policy.version, 4);
        // Edited after signing: refused, never applied.
        std::fs::write(
            d.path().join("policy.toml"),
            text.replacen("version = 4", "version = 5", 1),
        )
        .unwrap();
        let err = d.load_config(&issuer).unwrap_err();
        assert!(matches!(err, DirError::Refused { what: "policy", .. }), "{err}");
        assert!(err.to_string().contains("ask the office for a signed policy"), "{err}");
    }

    #[test]
    fn a_till_on_the_test_keys_is_told_the_keys_are_the_cause() {
        let (_tmp, d, test) = dir();
        d.create().unwrap();
        // Campaigns the real office signed, on a till given the test keys.
        let office = IssuerKeys::generate(2).unwrap();
        let text = "version = 3\ncampaigns = []\n";
        std::fs::write(d.path().join("campaigns.toml"), text).unwrap();
        let sig = sign_campaigns(text.as_bytes(), &office.issuer).unwrap();
        std::fs::write(d.path().join("campaigns.toml.sig"), &sig).unwrap();
        let err = d.load_config(&test.terminal_keys().issuer_public).unwrap_err();
        assert!(err.to_string().contains("runs on the published TEST keys"), "{err}");
        // Under the office's own keys the file is fine.
        assert_eq!(
            d.load_config(&office.terminal_keys().issuer_public)
                .unwrap()
                .campaigns
                .version,
            3
        );
    }

    #[test]
    fn online_settings_file() {
        use crate::till::{OnlineMode, OnlineSettings, WithoutAnswer};
        let (_tmp, d, _) = dir();
        d.create().unwrap();
        assert_eq!(d.online_settings().unwrap(), OnlineSettings::default());
        std::fs::write(
            d.path().join("online.toml"),
            "mode = \"always\"\nfloor_points = 5000\ntimeout_ms = 2500\nwithout_answer = \"decline\"\n",
        )
        .unwrap();
        let s = d.online_settings().unwrap();
        assert_eq!(
            (s.mode, s.floor_points, s.timeout, s.without_answer),
            (
                OnlineMode::Always,
                Some(5000),
                std::time::Duration::from_millis(2500),
                WithoutAnswer::Decline
            )
        );
        for bad in [
            "mode = \"never\"",
            "timeout_ms = 5",
            "without_answer = \"approve\"",
            "floor = 3",
            "mode = ",
        ] {
            std::fs::write(d.path().join("online.toml"), bad).unwrap();
            assert!(matches!(d.online_settings(), Err(DirError::Refused { .. })), "{bad}");
        }
    }

    #[test]
    fn time_zone_and_shift_files() {
        let (_tmp, d, _) = dir();
        d.create().unwrap();
        std::fs::write(d.path().join("time_zone"), "Europe/Paris\n").unwrap();
        assert_eq!(d.time_zone().unwrap().name(), Some("Europe/Paris"));
        std::fs::write(d.path().join("time_zone"), "Mars/Olympus").unwrap();
        assert!(matches!(d.time_zone(), Err(DirError::TimeZone(_))));
        assert_eq!(d.shift_opened().unwrap(), None);
        d.set_shift(Some(1_796_198_400)).unwrap();
        assert_eq!(d.shift_opened().unwrap(), Some(1_796_198_400));
        d.set_shift(None).unwrap();
        assert_eq!(d.shift_opened().unwrap(), None);
    }

    #[test]
    fn unreadable_issuer_decisions_are_skipped_entry_by_entry() {
        let (_tmp, d, _) = dir();
        d.create().unwrap();
        std::fs::write(
            d.path().join("settled.json"),
            r#"{"cards": {"0102030405060708": {"counter": 5, "issuer_macs": {"1": "a1a2a3a4a5a6a7a8", "x": "zz"}},
                          "not hex": {"counter": 1, "issuer_macs": {"1": "a1a2a3a4a5a6a7a8"}}}}"#,
        )
        .unwrap();
        let s = d.settled();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!((s[0].1.counter, s[0].1.key_version), (5, 1));
        std::fs::write(d.path().join("unblocks.json"), "not json").unwrap();
        assert!(d.unblocks().is_empty());
        assert!(d.key_updates().is_empty() && d.profile_updates().is_empty());
    }

    /// What a till rewrites after a tap (the unblocks still waiting) reads
    /// back whole: every card, every key version's MAC.
    #[test]
    fn rewritten_unblocks_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let waiting = vec![
            (
                [1u8; 8],
                Unblock {
                    key_version: 1,
                    seq: 3,
                    issuer_mac: [0xA1; 8],
                },
            ),
            (
                [1u8; 8],
                Unblock {
                    key_version: 2,
                    seq: 3,
                    issuer_mac: [0xA2; 8],
                },
            ),
            (
                [2u8; 8],
                Unblock {
                    key_version: 1,
                    seq: 7,
                    issuer_mac: [0xB1; 8],
                },
            ),
        ];
        TerminalDir::new(dir.path()).write_unblocks(&waiting).unwrap();
        let mut back = TerminalDir::new(dir.path()).unblocks();
        back.sort_by_key(|(c, u)| (*c, u.key_version));
        assert_eq!(back, waiting);
    }
}
