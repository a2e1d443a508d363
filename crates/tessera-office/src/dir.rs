//! The back office's directory: its key store, TLS identity and ledger,
//! and the office's operations on them, one call each. `tessera office`
//! is this module plus argument parsing and printing.
//!
//! | file | what |
//! |---|---|
//! | `issuer-keys.json` | the issuer key store (`0600`, never overwritten; rotated atomically) |
//! | `office-cert.pem`, `office-key.pem` | the TLS identity the terminals pin (the key `0600`) |
//! | `ledger.sqlite` | the ledger (never recreated when missing) |
//! | `campaigns.toml` + `.sig` | the published campaign file the office serves at sync |
//! | `audit.jsonl` | the audit log of office actions (`0600`, append-only, hash-chained, anchored in the ledger: [`crate::audit`]) |
//! | `books.toml` | written by [`OfficeDir::migrate_to_postgres`] (`0600`): the books are in that PostgreSQL database since, and `ledger.sqlite` is kept as it was copied, no longer written |
//!
//! Every operation that changes the office checks the audit log first
//! (nothing is done while it does not verify) and appends its entry after,
//! naming the operator ([`OfficeDir::with_operator`], else
//! [`crate::audit::operator`]'s environment).
//!
//! The directory itself is `0700`.
//!
//! ```
//! use tessera_office::dir::OfficeDir;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tmp = tempfile::tempdir()?;
//! let office = OfficeDir::new(tmp.path().join("office"));
//! let made = office.init(&[])?;
//! let (keys, ledger) = office.open()?;
//! assert_eq!(keys.key_version, made.key_version);
//! assert!(ledger.verify()?.is_empty());
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tessera_crypto::files::{write_atomic, write_new_private};
use tessera_crypto::keys::{IssuerKeys, OfficeLink, TerminalBundle};
use tessera_ledger::books::OfficeBooks;
use tessera_ledger::{Ledger, LedgerError, LedgerKeys, NewCustomer};
use tessera_protocol::profile::{Profile, SignedProfile};
use tessera_rules::offers::{sign_campaigns, signature_path, CampaignSet};
use tessera_rules::policy::Policy;

use crate::audit::{self, AuditEntry, AuditError};

use crate::tls::{OfficeIdentity, TlsError, CERT_FILE, KEY_FILE};

mod ops;
pub use ops::{CustomerExport, CustomerRef};

/// The key store's file name.
pub const KEYS_FILE: &str = "issuer-keys.json";
/// The ledger's file name.
pub const LEDGER_FILE: &str = "ledger.sqlite";
/// The file that says where the books are once they moved to PostgreSQL
/// (`postgres = "URL"`).
pub const BOOKS_FILE: &str = "books.toml";
/// The published campaign file's name.
pub const CAMPAIGNS_FILE: &str = "campaigns.toml";

/// Why an office operation did not happen. Nothing was changed unless the
/// variant says otherwise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OfficeDirError {
    /// There is no office here: run `tessera office init` first (or give
    /// the right directory).
    #[error("{0} not found: run `tessera office init --dir {1}` first")]
    NotAnOffice(String, String),
    /// The key store is unreadable as one: restore it from the backup.
    #[error("{0} is not a key store")]
    NotKeyStore(String),
    /// A file that is never overwritten is already there (an office's
    /// keys, a TLS identity, a bundle): choose another path, or remove it
    /// knowingly.
    #[error("{0}")]
    Exists(String),
    /// The office has no TLS identity: run `tessera office tls-cert`.
    #[error("{dir} has no TLS certificate: run `tessera office tls-cert --dir {dir}`")]
    NoCertificate {
        /// The office directory.
        dir: String,
    },
    /// The ledger's books disagree with its postings: `office verify`
    /// lists the problems; restore from a backup. Nothing is served.
    #[error("the ledger's books disagree with its postings ({first}; {count} problems, `office verify` lists them): not serving")]
    Unsound {
        /// The first problem.
        first: String,
        /// How many.
        count: usize,
    },
    /// A file to sign would be refused by the tills: fix it first.
    #[error("{what} {path}: {why}")]
    Unsignable {
        /// "campaign file" or "policy file".
        what: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The ledger refused the batch (see [`LedgerError`] and its HTTP
    /// status): nothing of it was posted.
    #[error("batch refused ({status}): {0}", status = .0.http_status())]
    BatchRefused(LedgerError),
    /// The key version (or a profile version) is exhausted.
    #[error("{0}")]
    Exhausted(&'static str),
    /// The ledger refused or failed (see [`LedgerError`]).
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// The TLS identity could not be made or read.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The card was issued but belongs to no customer any more (erased).
    #[error("card {0} belongs to no customer (its customer was erased)")]
    NoCustomer(String),
    /// The audit log refused: no operator name, or a log that does not
    /// verify (nothing was done), or it could not be written (the action
    /// before it was done; its entry is missing: see the message).
    #[error("audit: {0}")]
    Audit(#[from] AuditError),
    /// A file could not be read or written: check the path and permissions.
    #[error("{what}: {source}")]
    Io {
        /// The file.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// Copying the ledger into PostgreSQL failed, or the copy does not
    /// equal the ledger (then nothing was copied).
    #[error(transparent)]
    Postgres(#[from] tessera_ledger_pg::PgError),
    /// The books moved to PostgreSQL (`books.toml`): the SQLite ledger is
    /// no longer written, and this operation is one of the SQLite ledger
    /// (moving it again). Nothing was done.
    #[error("the books of {dir} are on PostgreSQL already ({BOOKS_FILE}): {what} works on the SQLite ledger they left; nothing was done")]
    BooksOnPostgres {
        /// The office directory.
        dir: String,
        /// The operation refused.
        what: &'static str,
    },
    /// `books.toml` is unreadable or names no database: restore it (its
    /// content is `postgres = "postgres://…"`).
    #[error("{0}")]
    BadBooksFile(String),
    /// The office is asked to serve from PostgreSQL, but its books were
    /// never moved there.
    #[error("the books of {0} are in its SQLite ledger: move them first with `tessera office migrate --dir {0} --to postgres://…`")]
    BooksNotOnPostgres(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> OfficeDirError {
    let what = what.into();
    move |source| OfficeDirError::Io { what, source }
}

/// A new file that is never overwritten.
fn write_once(path: &Path, bytes: &[u8]) -> Result<(), OfficeDirError> {
    write_new_private(path, bytes).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            OfficeDirError::Exists(format!("{} already exists: it is never overwritten", path.display()))
        } else {
            io(path.display().to_string())(e)
        }
    })
}

/// What [`OfficeDir::init`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOffice {
    /// The issuer's id.
    pub issuer_id: [u8; 4],
    /// The key version of the fresh keys.
    pub key_version: u8,
    /// The issuer's public key, hex.
    pub issuer_public_key: String,
    /// SHA-256 of the TLS certificate the terminals pin.
    pub tls_cert_sha256: [u8; 32],
}

/// A campaign or policy file signed by [`OfficeDir::sign_campaigns`] or
/// [`sign_campaign_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The file's version.
    pub version: u32,
    /// Number of campaigns (0 for a policy).
    pub campaigns: usize,
    /// The signature file written next to the file.
    pub signature_file: PathBuf,
    /// Where it was published for the tills, if it was.
    pub published: Option<PathBuf>,
    /// The file's SHA-256 (what the ledger registered).
    pub digest: [u8; 32],
}

/// The office's directory (see the module documentation).
#[derive(Debug, Clone)]
pub struct OfficeDir {
    path: PathBuf,
    operator: Option<String>,
}

impl OfficeDir {
    /// The office at `path` (nothing is read yet). Its actions are audited
    /// under the operator named by the environment
    /// ([`crate::audit::operator`]) unless [`OfficeDir::with_operator`]
    /// names one.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            operator: None,
        }
    }

    /// The same office, its actions audited under `operator` (`None`: the
    /// environment's, see [`crate::audit::operator`]).
    pub fn with_operator(mut self, operator: Option<String>) -> Self {
        self.operator = operator;
        self
    }

    /// The operator this office's actions are audited under.
    ///
    /// # Errors
    /// [`OfficeDirError::Audit`]: no name, or not a valid one.
    pub fn operator(&self) -> Result<String, OfficeDirError> {
        Ok(audit::operator(self.operator.as_deref())?)
    }

    /// Checks, before an action changes anything, that it can be audited:
    /// the operator's name and a log that verifies. Returns the operator.
    ///
    /// # Errors
    /// [`OfficeDirError::Audit`]; those of [`OfficeDir::open`].
    pub fn audit_ready(&self) -> Result<String, OfficeDirError> {
        let operator = self.operator()?;
        let (_keys, books) = self.open_office_books()?;
        audit::ready(&self.path, books.as_ref())?;
        Ok(operator)
    }

    /// Appends an entry to the office's audit log: `action` (a short dotted
    /// name, e.g. `card.adjust`) done now by `operator`, with `details`
    /// (ids and values, never personal data). Call
    /// [`OfficeDir::audit_ready`] before the action, this after it.
    ///
    /// # Errors
    /// [`OfficeDirError::Audit`]; those of [`OfficeDir::open`].
    pub fn audit(&self, operator: &str, action: &str, details: Value) -> Result<AuditEntry, OfficeDirError> {
        let (_keys, mut books) = self.open_office_books()?;
        Ok(audit::append(
            &self.path,
            books.as_mut(),
            operator,
            action,
            details,
            audit::now(),
        )?)
    }

    /// Audits with an open ledger (see [`OfficeDir::audit`]).
    fn audit_with(
        &self,
        ledger: &mut dyn OfficeBooks,
        operator: &str,
        action: &str,
        details: Value,
    ) -> Result<(), OfficeDirError> {
        audit::append(&self.path, ledger, operator, action, details, audit::now())?;
        Ok(())
    }

    /// The keys and the office's books wherever they are (the SQLite
    /// ledger, or PostgreSQL once they moved), for the actions both
    /// backends carry ([`OfficeBooks`]).
    ///
    /// # Errors
    /// Those of [`OfficeDir::load_keys`]; [`OfficeDirError::Ledger`],
    /// [`OfficeDirError::Postgres`].
    pub fn open_office_books(&self) -> Result<(IssuerKeys, Box<dyn OfficeBooks>), OfficeDirError> {
        if let Some(url) = self.postgres_url()? {
            let keys = self.load_keys()?;
            let pg = tessera_ledger_pg::posting::PgLedger::open(&url, LedgerKeys::from_issuer(&keys))?;
            return Ok((keys, Box::new(pg)));
        }
        let (keys, ledger) = self.open_sqlite()?;
        Ok((keys, Box::new(ledger)))
    }

    /// [`OfficeDir::open_office_books`], the operator, and a check that
    /// the audit log verifies: what every office action starts with.
    fn open_books_for_action(&self) -> Result<(IssuerKeys, Box<dyn OfficeBooks>, String), OfficeDirError> {
        let operator = self.operator()?;
        let (keys, books) = self.open_office_books()?;
        audit::ready(&self.path, books.as_ref())?;
        Ok((keys, books, operator))
    }

    /// The audit log's entries, oldest first.
    ///
    /// # Errors
    /// [`OfficeDirError::Audit`].
    pub fn audit_entries(&self) -> Result<Vec<AuditEntry>, OfficeDirError> {
        self.load_keys()?;
        Ok(audit::entries(&self.path)?)
    }

    /// Verifies the audit log: the chain of hashes and its anchor in the
    /// ledger (see [`crate::audit`] for what is and is not detected).
    ///
    /// # Errors
    /// [`OfficeDirError::Audit`]; those of [`OfficeDir::open`].
    pub fn audit_verify(&self) -> Result<audit::AuditCheck, OfficeDirError> {
        let (_keys, books) = self.open_office_books()?;
        Ok(audit::verify(&self.path, books.as_ref())?)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates an office: the directory (`0700`), fresh issuer keys
    /// (production key stores start at key version 2: version 1 and the
    /// issuer id `TEST` belong to the published test keys), a TLS identity
    /// for `tls_names` (plus loopback), an empty ledger.
    ///
    /// # Errors
    /// [`OfficeDirError::Exists`] when the directory already holds an
    /// office (its keys are never overwritten); I/O, TLS, ledger errors.
    pub fn init(&self, tls_names: &[String]) -> Result<NewOffice, OfficeDirError> {
        let operator = self.operator()?;
        let dir = &self.path;
        if dir.join(KEYS_FILE).exists() {
            return Err(OfficeDirError::Exists(format!(
                "{} already holds an office: its keys are never overwritten",
                dir.display()
            )));
        }
        let what = format!("office directory {}", dir.display());
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir).map_err(io(what.clone()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(what))?;
        }
        let keys = IssuerKeys::generate(2).map_err(|e| OfficeDirError::Io {
            what: "key ceremony".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let identity = OfficeIdentity::generate(tls_names)?;
        identity.write_new(dir)?;
        write_once(&dir.join(KEYS_FILE), keys.to_json().as_bytes())?;
        let mut ledger = Ledger::open(&dir.join(LEDGER_FILE), LedgerKeys::from_issuer(&keys))?;
        self.audit_with(
            &mut ledger,
            &operator,
            "office.init",
            json!({"issuer_id": hex::encode_upper(keys.issuer_id), "key_version": keys.key_version,
                   "tls_cert_sha256": hex::encode(identity.cert_sha256())}),
        )?;
        Ok(NewOffice {
            issuer_id: keys.issuer_id,
            key_version: keys.key_version,
            issuer_public_key: keys.issuer.public().to_hex(),
            tls_cert_sha256: identity.cert_sha256(),
        })
    }

    /// The issuer key store.
    ///
    /// # Errors
    /// [`OfficeDirError::NotAnOffice`], [`OfficeDirError::NotKeyStore`],
    /// [`OfficeDirError::Io`].
    pub fn load_keys(&self) -> Result<IssuerKeys, OfficeDirError> {
        let path = self.path.join(KEYS_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                OfficeDirError::NotAnOffice(path.display().to_string(), self.path.display().to_string())
            } else {
                io(path.display().to_string())(e)
            }
        })?;
        IssuerKeys::from_json(&text).map_err(|_| OfficeDirError::NotKeyStore(path.display().to_string()))
    }

    /// The keys and the ledger. A missing, empty or corrupt ledger is an
    /// error, never recreated.
    ///
    /// # Errors
    /// Those of [`OfficeDir::load_keys`]; [`OfficeDirError::Ledger`].
    pub fn open(&self) -> Result<(IssuerKeys, Ledger), OfficeDirError> {
        if self.postgres_url()?.is_some() {
            return Err(OfficeDirError::BooksOnPostgres {
                dir: self.path.display().to_string(),
                what: "copying the ledger (office migrate)",
            });
        }
        self.open_sqlite()
    }

    /// The SQLite ledger, wherever the books are (for comparing it with
    /// its copy).
    fn open_sqlite(&self) -> Result<(IssuerKeys, Ledger), OfficeDirError> {
        let keys = self.load_keys()?;
        let ledger = Ledger::open_existing(&self.path.join(LEDGER_FILE), LedgerKeys::from_issuer(&keys))?;
        Ok((keys, ledger))
    }

    /// As [`OfficeDir::open`], for serving: books that disagree with their
    /// postings (an edited balance) are refused, so they are never served.
    ///
    /// # Errors
    /// Those of [`OfficeDir::open`]; [`OfficeDirError::Unsound`].
    pub fn open_for_serving(&self) -> Result<(IssuerKeys, Ledger), OfficeDirError> {
        let (keys, ledger) = self.open()?;
        let problems = ledger.self_check()?;
        if let Some(first) = problems.first() {
            return Err(OfficeDirError::Unsound {
                first: first.clone(),
                count: problems.len(),
            });
        }
        Ok((keys, ledger))
    }

    /// The office's TLS identity.
    ///
    /// # Errors
    /// [`OfficeDirError::NoCertificate`]; [`OfficeDirError::Tls`].
    pub fn identity(&self) -> Result<OfficeIdentity, OfficeDirError> {
        OfficeIdentity::load(&self.path).map_err(|e| match e {
            TlsError::File { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                OfficeDirError::NoCertificate {
                    dir: self.path.display().to_string(),
                }
            }
            other => other.into(),
        })
    }

    /// Makes a TLS identity for an office that has none (after an upgrade,
    /// or to re-key: remove the old files knowingly first).
    ///
    /// # Errors
    /// [`OfficeDirError::Exists`] when a certificate or key is there.
    pub fn new_tls_identity(&self, tls_names: &[String]) -> Result<OfficeIdentity, OfficeDirError> {
        let (_keys, mut ledger, operator) = self.open_books_for_action()?;
        if self.path.join(CERT_FILE).exists() || self.path.join(KEY_FILE).exists() {
            return Err(OfficeDirError::Exists(format!(
                "{} already has a TLS certificate or key: they are never overwritten",
                self.path.display()
            )));
        }
        let identity = OfficeIdentity::generate(tls_names)?;
        identity.write_new(&self.path)?;
        self.audit_with(
            ledger.as_mut(),
            &operator,
            "office.tls-cert",
            json!({"tls_cert_sha256": hex::encode(identity.cert_sha256())}),
        )?;
        Ok(identity)
    }

    /// Registers a terminal and writes its key bundle to `out` (`0600`,
    /// never overwritten). The bundle pins the office's TLS certificate;
    /// `plain_http` makes a bundle for plain HTTP to a loopback office, an
    /// explicit choice, never the fallback for a missing certificate.
    ///
    /// # Errors
    /// [`OfficeDirError::Exists`], [`OfficeDirError::NoCertificate`], and
    /// those of [`OfficeDir::open`].
    pub fn export_terminal(
        &self,
        terminal_id: u32,
        out: &Path,
        plain_http: bool,
        now: u32,
    ) -> Result<TerminalBundle, OfficeDirError> {
        self.export_terminal_with(terminal_id, out, plain_http, now, |keys, link| {
            Ok(keys.terminal_bundle(terminal_id, link))
        })
    }

    /// As [`OfficeDir::export_terminal`], with the bundle made by `make`
    /// from the office's keys and the link to the office: for a key module
    /// that takes the masters instead of the bundle (`tessera-pkcs11`'s
    /// `provision`). Nothing is registered or written when `make` fails.
    ///
    /// # Errors
    /// Those of [`OfficeDir::export_terminal`], and `make`'s.
    pub fn export_terminal_with<E: From<OfficeDirError>>(
        &self,
        terminal_id: u32,
        out: &Path,
        plain_http: bool,
        now: u32,
        make: impl FnOnce(&IssuerKeys, OfficeLink) -> Result<TerminalBundle, E>,
    ) -> Result<TerminalBundle, E> {
        let (keys, mut ledger, operator) = self.open_books_for_action()?;
        if out.exists() {
            return Err(
                OfficeDirError::Exists(format!("{} already exists: it is never overwritten", out.display())).into(),
            );
        }
        let link = if plain_http {
            OfficeLink::PlainLoopback
        } else {
            OfficeLink::Pinned {
                cert_sha256: self.identity()?.cert_sha256(),
            }
        };
        let bundle = make(&keys, link)?;
        ledger
            .register_terminal(terminal_id, now)
            .map_err(OfficeDirError::from)?;
        write_once(out, bundle.to_json().as_bytes())?;
        self.audit_with(
            ledger.as_mut(),
            &operator,
            "terminal.export",
            json!({"terminal_id": terminal_id, "bundle": out.display().to_string(), "plain_http": plain_http}),
        )?;
        Ok(bundle)
    }

    /// Rotates the issuer keys to the next version. The new store is
    /// written next to the old one, then renamed over it: the file is the
    /// old store or the new one, never half of either. Returns the old and
    /// the new key version.
    ///
    /// # Errors
    /// [`OfficeDirError::Exhausted`] at version 255; I/O errors.
    pub fn rotate_keys(&self) -> Result<(u8, u8), OfficeDirError> {
        let (mut keys, mut ledger, operator) = self.open_books_for_action()?;
        let from = keys.key_version;
        keys.rotate()
            .map_err(|_| OfficeDirError::Exhausted("the key version is exhausted (255)"))?;
        let path = self.path.join(KEYS_FILE);
        write_atomic(&path, keys.to_json().as_bytes()).map_err(io(path.display().to_string()))?;
        self.audit_with(
            ledger.as_mut(),
            &operator,
            "keys.rotate",
            json!({"from_key_version": from, "key_version": keys.key_version}),
        )?;
        Ok((from, keys.key_version))
    }

    /// Signs a campaign file with the office's issuer key, registers it
    /// with the ledger (which recomputes purchases under the campaigns they
    /// name), writes `FILE.sig` next to it, and publishes both as the
    /// office's `campaigns.toml` for the tills (the signature first, so a
    /// published file always has one).
    ///
    /// # Errors
    /// [`OfficeDirError::Unsignable`] for a file the tills would refuse;
    /// those of [`OfficeDir::open`]; I/O errors.
    pub fn sign_campaigns(&self, file: &Path, now: u32) -> Result<Signed, OfficeDirError> {
        let (keys, mut ledger, operator) = self.open_books_for_action()?;
        let (text, set, sig) = prepare_campaigns(file, &keys)?;
        let digest = ledger.register_campaigns(&text, now)?;
        let signature_file = write_signature(file, &sig)?;
        let target = self.path.join(CAMPAIGNS_FILE);
        write_signature(&target, &sig)?;
        write_atomic(&target, text.as_bytes()).map_err(io(target.display().to_string()))?;
        self.audit_with(
            ledger.as_mut(),
            &operator,
            "campaigns.sign",
            json!({"file": file.display().to_string(), "version": set.version,
                   "campaigns": set.campaigns.len(), "sha256": hex::encode(digest)}),
        )?;
        Ok(Signed {
            version: set.version,
            campaigns: set.campaigns.len(),
            signature_file,
            published: Some(target),
            digest,
        })
    }

    /// Signs a till policy with the office's issuer key, registers it with
    /// the ledger and writes `FILE.sig` next to it.
    ///
    /// # Errors
    /// As [`OfficeDir::sign_campaigns`].
    pub fn sign_policy(&self, file: &Path, now: u32) -> Result<Signed, OfficeDirError> {
        let (keys, mut ledger, operator) = self.open_books_for_action()?;
        let (text, policy, sig) = prepare_policy(file, &keys)?;
        ledger.register_policy(&text, now)?;
        let signed = Signed {
            version: policy.version,
            campaigns: 0,
            signature_file: write_signature(file, &sig)?,
            published: None,
            digest: policy.digest,
        };
        self.audit_with(
            ledger.as_mut(),
            &operator,
            "policy.sign",
            json!({"file": file.display().to_string(), "version": policy.version, "sha256": hex::encode(policy.digest)}),
        )?;
        Ok(signed)
    }

    /// Imports a batch file carried from a till (`tessera pos settle
    /// --out`): streams it into the ledger, which verifies and posts it,
    /// and returns the outcome with the acknowledgement for the till.
    /// `on_progress(bytes_read, file_size)` is called as the file is read.
    ///
    /// # Errors
    /// [`OfficeDirError::BatchRefused`]; those of [`OfficeDir::open`];
    /// [`OfficeDirError::Io`] when the file cannot be opened.
    pub fn import_batch_file(
        &self,
        file: &Path,
        now: u32,
        on_progress: impl FnMut(u64, u64),
    ) -> Result<tessera_ledger::IngestOutcome, OfficeDirError> {
        let (_keys, mut ledger) = self.open_office_books()?;
        let f = std::fs::File::open(file).map_err(io(format!("batch file {}", file.display())))?;
        let total = f.metadata().map(|m| m.len()).unwrap_or(0);
        let reader = Progress {
            inner: f,
            done: 0,
            total,
            on_progress,
        };
        let mut reader = std::io::BufReader::with_capacity(256 * 1024, reader);
        ledger
            .ingest_dyn(&mut reader, now)
            .map_err(OfficeDirError::BatchRefused)
    }

    /// Queues a new profile for a card: signed by the issuer, delivered to
    /// the card at its next tap after the tills' sync. Without `version`,
    /// the next after the newest one queued (2 for a card with none).
    ///
    /// # Errors
    /// [`OfficeDirError::Exhausted`]; ledger errors.
    pub fn queue_profile_update(
        &self,
        mut profile: Profile,
        version: Option<u16>,
        now: u32,
    ) -> Result<SignedProfile, OfficeDirError> {
        let (keys, mut ledger, operator) = self.open_books_for_action()?;
        let card = profile.card_id;
        profile.version = match version {
            Some(v) => v,
            None => ledger
                .profile_updates()?
                .iter()
                .filter(|(c, _, _)| *c == card)
                .map(|(_, v, _)| *v)
                .max()
                .unwrap_or(1)
                .checked_add(1)
                .ok_or(OfficeDirError::Exhausted("the profile version is exhausted"))?,
        };
        let signed = keys
            .issuer
            .sign(&profile)
            .map_err(|_| OfficeDirError::Exhausted("the profile cannot be encoded"))?;
        ledger.queue_profile_update(card, profile.version, signed.to_bytes(), now)?;
        self.audit_with(
            ledger.as_mut(),
            &operator,
            "profile.update",
            json!({"card_id": hex::encode_upper(card), "profile_version": profile.version}),
        )?;
        Ok(signed)
    }
}

/// A reader that reports how much of it was read.
struct Progress<R, F> {
    inner: R,
    done: u64,
    total: u64,
    on_progress: F,
}

impl<R: std::io::Read, F: FnMut(u64, u64)> std::io::Read for Progress<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.on_progress)(self.done, self.total);
        Ok(n)
    }
}

/// Registers a freshly personalized card with its customer in the ledger
/// (the customer's personal data from the signed profile); returns the
/// customer id.
///
/// # Errors
/// The ledger's.
pub fn register_issued(
    ledger: &mut dyn OfficeBooks,
    key_version: u8,
    signed: &SignedProfile,
    now: u32,
) -> Result<u64, LedgerError> {
    let p = &signed.profile;
    let customer = ledger.register_customer(&NewCustomer {
        name: p.name.clone(),
        birth_date: p.birth_date,
        home_city: p.home_city.clone(),
        household: p.household,
        preferences: p.preferences.clone(),
        tier: p.tier,
    })?;
    ledger.register_card(p.card_id, customer, key_version, now)?;
    Ok(customer)
}

fn read_signable(file: &Path, what: &'static str) -> Result<String, OfficeDirError> {
    let bad = |why: String| OfficeDirError::Unsignable {
        what,
        path: file.display().to_string(),
        why,
    };
    let body = std::fs::read(file).map_err(|e| bad(e.to_string()))?;
    String::from_utf8(body).map_err(|_| bad("not UTF-8".into()))
}

fn write_signature(file: &Path, sig: &str) -> Result<PathBuf, OfficeDirError> {
    let sig_path = signature_path(file);
    write_atomic(&sig_path, format!("{sig}\n").as_bytes()).map_err(io(sig_path.display().to_string()))?;
    Ok(sig_path)
}

fn unsignable<'a>(what: &'static str, file: &'a Path) -> impl Fn(String) -> OfficeDirError + 'a {
    move |why| OfficeDirError::Unsignable {
        what,
        path: file.display().to_string(),
        why,
    }
}

/// A campaign file the tills accept, and its signature.
fn prepare_campaigns(file: &Path, keys: &IssuerKeys) -> Result<(String, CampaignSet, String), OfficeDirError> {
    let bad = unsignable("campaign file", file);
    let text = read_signable(file, "campaign file")?;
    let set = CampaignSet::from_toml(&text).map_err(|e| bad(e.to_string()))?;
    let sig = sign_campaigns(text.as_bytes(), &keys.issuer).map_err(|e| bad(e.to_string()))?;
    Ok((text, set, sig))
}

/// A till policy the tills accept, and its signature.
fn prepare_policy(file: &Path, keys: &IssuerKeys) -> Result<(String, Policy, String), OfficeDirError> {
    let bad = unsignable("policy file", file);
    let text = read_signable(file, "policy file")?;
    let policy = Policy::from_toml(&text).map_err(|e| bad(e.to_string()))?;
    let sig = sign_campaigns(text.as_bytes(), &keys.issuer).map_err(|e| bad(e.to_string()))?;
    Ok((text, policy, sig))
}

/// Checks that a campaign file is one the tills accept, signs it with
/// `keys` and writes `FILE.sig` next to it (no office needed: for the test
/// keys in training).
///
/// # Errors
/// [`OfficeDirError::Unsignable`], I/O errors.
pub fn sign_campaign_file(file: &Path, keys: &IssuerKeys) -> Result<Signed, OfficeDirError> {
    let (text, set, sig) = prepare_campaigns(file, keys)?;
    Ok(Signed {
        version: set.version,
        campaigns: set.campaigns.len(),
        signature_file: write_signature(file, &sig)?,
        published: None,
        digest: sha256(text.as_bytes()),
    })
}

/// As [`sign_campaign_file`] for a till policy.
///
/// # Errors
/// [`OfficeDirError::Unsignable`], I/O errors.
pub fn sign_policy_file(file: &Path, keys: &IssuerKeys) -> Result<Signed, OfficeDirError> {
    let (_, policy, sig) = prepare_policy(file, keys)?;
    Ok(Signed {
        version: policy.version,
        campaigns: 0,
        signature_file: write_signature(file, &sig)?,
        published: None,
        digest: policy.digest,
    })
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

impl OfficeDir {
    /// Issues a goodwill credit or a correction for a card (`office
    /// adjust`, see [`Ledger::issue_adjustment`]), under and audited as
    /// `card.adjust` by [`OfficeDir::operator`]. The card gets it at its
    /// next tap at a till after `pos sync`.
    ///
    /// # Errors
    /// [`OfficeDirError::Audit`] (no operator, a log that does not verify:
    /// nothing done); the ledger's refusals.
    pub fn adjust(
        &self,
        card_id: [u8; 8],
        points: i64,
        kind: tessera_ledger::AdjustmentKind,
        reason: &str,
        now: u32,
    ) -> Result<tessera_ledger::AdjustmentRow, OfficeDirError> {
        let (_keys, mut ledger, operator) = self.open_books_for_action()?;
        let row = ledger.issue_adjustment(
            &tessera_ledger::NewAdjustment {
                card_id,
                points,
                kind,
                reason: reason.trim().to_owned(),
                operator: operator.clone(),
            },
            now,
        )?;
        self.audit_with(
            ledger.as_mut(),
            &operator,
            "card.adjust",
            serde_json::json!({
                "card_id": hex::encode_upper(card_id), "seq": row.seq, "points": row.signed_points(),
                "kind": row.kind.as_str(), "reason": row.reason,
            }),
        )?;
        Ok(row)
    }

    /// Referral approval (`office approve`): an office person approves an
    /// operation a till referred, for that till, card, kind and amount
    /// (minor units for an earn, points otherwise), valid for
    /// `valid_for_secs`. Returns the approval with the code to read to the
    /// clerk (`docs/terminal-policy.md`, "Referral approval codes"); the
    /// ledger keeps it and reconciles its use at settlement.
    ///
    /// # Errors
    /// Those of [`OfficeDir::open`]; [`OfficeDirError::Ledger`] with
    /// [`LedgerError::Malformed`] for an unknown or revoked terminal, a
    /// card never issued, a zero amount, a validity outside 1 minute to 3
    /// days; [`OfficeDirError::Audit`] for no operator name or an audit log
    /// that does not verify. Issued by, and audited as `approval.issue`
    /// under, [`OfficeDir::operator`].
    pub fn approve(
        &self,
        terminal_id: u32,
        card_id: [u8; 8],
        kind: tessera_crypto::referral::ReferralKind,
        amount: u64,
        valid_for_secs: u32,
        now: u32,
    ) -> Result<tessera_ledger::approvals::IssuedApproval, OfficeDirError> {
        let (_keys, mut ledger, operator) = self.open_books_for_action()?;
        let issued = ledger.issue_approval(
            &tessera_ledger::approvals::ApprovalRequest {
                terminal_id,
                card_id,
                kind,
                amount,
                valid_for_secs,
                issued_by: &operator,
            },
            now,
        )?;
        self.audit_with(
            ledger.as_mut(),
            &operator,
            "approval.issue",
            serde_json::json!({
                "approval_id": issued.id, "terminal_id": terminal_id, "card_id": hex::encode_upper(card_id),
                "kind": issued.kind, "amount": issued.amount, "expires_at": issued.expires_at,
            }),
        )?;
        Ok(issued)
    }

    /// The office's decision on a card's request read over the telephone
    /// (card application v2.2, `tessera_crypto::voice`): decided by the
    /// ledger as an online request is ([`OfficeBooks::authorize_by_voice`]) and,
    /// approved, answered with the code the clerk types in — the issuer MAC
    /// the card checks against its own request. Audited as
    /// `authorization.voice` under [`OfficeDir::operator`].
    ///
    /// # Errors
    /// As [`OfficeDir::approve`].
    ///
    /// [`OfficeBooks::authorize_by_voice`]: tessera_ledger::books::OfficeBooks::authorize_by_voice
    #[allow(clippy::too_many_arguments)]
    pub fn approve_voice(
        &self,
        terminal_id: u32,
        card_id: [u8; 8],
        voice: &tessera_crypto::voice::VoiceReference,
        kind: tessera_protocol::messages::TxKind,
        points: u32,
        original: u32,
        now: u32,
    ) -> Result<
        (
            tessera_ledger::OnlineVerdict,
            Option<tessera_crypto::voice::VoiceAnswer>,
        ),
        OfficeDirError,
    > {
        let (keys, mut ledger, operator) = self.open_books_for_action()?;
        let (verdict, counter, answer) = crate::authorization::decide_by_voice(
            ledger.as_mut(),
            &keys,
            terminal_id,
            card_id,
            voice,
            kind,
            points,
            original,
            &operator,
            &tessera_ledger::OnlinePolicy::default(),
            now,
        )?;
        self.audit_with(
            ledger.as_mut(),
            &operator,
            "authorization.voice",
            serde_json::json!({
                "terminal_id": terminal_id, "card_id": hex::encode_upper(card_id), "kind": kind.name(),
                "points": points, "reference": original, "counter": counter, "code": verdict.code,
            }),
        )?;
        Ok((verdict, answer))
    }

    /// Copies the office's ledger into the PostgreSQL database at `url`
    /// (`office migrate --to`), after the checks of serving (books that
    /// disagree with their postings are not copied): every table in one
    /// transaction, proved equal to the ledger — row counts and contents —
    /// before it commits ([`tessera_ledger_pg::copy`]). The database must be
    /// new or hold an empty ledger. Returns the per-table comparison.
    ///
    /// # Errors
    /// Those of [`OfficeDir::open_for_serving`]; [`OfficeDirError::Postgres`].
    pub fn migrate_to_postgres(&self, url: &str) -> Result<Vec<tessera_ledger_pg::copy::TableDigest>, OfficeDirError> {
        if url.contains(['"', '\\', '\n', '\r']) {
            return Err(OfficeDirError::BadBooksFile(
                "a database URL has no quotes, backslashes or line breaks (percent-encode them)".into(),
            ));
        }
        let (_keys, ledger) = self.open_for_serving()?;
        drop(ledger);
        let mut client = tessera_ledger_pg::connect(url)?;
        let tables = tessera_ledger_pg::copy::copy_ledger(&self.path.join(LEDGER_FILE), &mut client)?;
        // From now on the books are there: every office command opens
        // them there (`OfficeDir::open_office_books`), and the SQLite
        // ledger is no longer written (`BooksOnPostgres`).
        let path = self.path.join(BOOKS_FILE);
        let text = format!(
            "# The books of this office are in PostgreSQL since `office migrate`;\n\
             # ledger.sqlite is kept as it was copied and no longer written.\n\
             postgres = {}\n",
            format_args!("\"{url}\"")
        );
        write_atomic(&path, text.as_bytes()).map_err(io(path.display().to_string()))?;
        Ok(tables)
    }

    /// The PostgreSQL database the books moved to ([`BOOKS_FILE`]), `None`
    /// while they are in the SQLite ledger.
    ///
    /// # Errors
    /// [`OfficeDirError::BadBooksFile`] for a file that names no database;
    /// [`OfficeDirError::Io`].
    pub fn postgres_url(&self) -> Result<Option<String>, OfficeDirError> {
        let path = self.path.join(BOOKS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(path.display().to_string())(e)),
        };
        let bad = |why: &str| OfficeDirError::BadBooksFile(format!("{}: {why}", path.display()));
        let mut url = None;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some(value) = line
                .strip_prefix("postgres")
                .map(str::trim_start)
                .and_then(|l| l.strip_prefix('='))
            else {
                return Err(bad("only `postgres = \"postgres://…\"` belongs here"));
            };
            let value = value.trim();
            let inner = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .filter(|v| !v.contains(['"', '\\']))
                .ok_or_else(|| bad("the database URL is a quoted string"))?;
            if url.replace(inner.to_owned()).is_some() {
                return Err(bad("names two databases"));
            }
        }
        let url = url.ok_or_else(|| bad("names no database"))?;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(bad("the database URL starts with postgres://"));
        }
        Ok(Some(url))
    }

    /// The office's keys and its books, for serving, wherever they are:
    /// on PostgreSQL once they moved there ([`OfficeDir::open_postgres`]),
    /// else the SQLite ledger ([`OfficeDir::open_for_serving`]: books that
    /// disagree with their postings are never served). `postgres` refuses
    /// to serve books that never moved.
    ///
    /// # Errors
    /// Those of the two; [`OfficeDirError::BooksNotOnPostgres`] with
    /// `postgres` when the books are in the SQLite ledger.
    pub fn open_books(
        &self,
        postgres: bool,
        connections: usize,
    ) -> Result<(IssuerKeys, crate::server::Books), OfficeDirError> {
        if postgres || self.postgres_url()?.is_some() {
            return self.open_postgres(connections);
        }
        let (keys, ledger) = self.open_for_serving()?;
        Ok((keys, ledger.into()))
    }

    /// The office's keys and its books on PostgreSQL, for serving
    /// (`office serve --postgres`): the database named in [`BOOKS_FILE`],
    /// reachable and migrated to this code's schema, served through at most
    /// `connections` connections.
    ///
    /// # Errors
    /// [`OfficeDirError::BooksNotOnPostgres`] when the books were never
    /// moved; [`OfficeDirError::Postgres`] when the database cannot be
    /// reached or is newer; [`OfficeDirError::Unsound`] when the books
    /// disagree with their postings; those of loading the keys.
    pub fn open_postgres(&self, connections: usize) -> Result<(IssuerKeys, crate::server::Books), OfficeDirError> {
        let url = self
            .postgres_url()?
            .ok_or_else(|| OfficeDirError::BooksNotOnPostgres(self.path.display().to_string()))?;
        let keys = self.load_keys()?;
        let ledger_keys = LedgerKeys::from_issuer(&keys);
        // Reachable and migrated now, and sound: a wrong URL fails at
        // start, not at the first upload, and books that disagree with
        // their postings (a balance edited in the database) are never
        // served, as on SQLite.
        let pg = tessera_ledger_pg::posting::PgLedger::open(&url, ledger_keys.clone())?;
        let problems = tessera_ledger::Warehouse::soundness(&pg)?.problems;
        drop(pg);
        if let Some(first) = problems.first() {
            return Err(OfficeDirError::Unsound {
                first: first.clone(),
                count: problems.len(),
            });
        }
        Ok((
            keys,
            crate::server::Books::Postgres {
                url,
                keys: ledger_keys,
                connections,
            },
        ))
    }

    /// The warehouse of the office's books, wherever they are: the SQLite
    /// ledger, or the PostgreSQL database [`BOOKS_FILE`] names once the
    /// books moved (`office migrate`) — what the analytics reports read
    /// (`office report rfm`, `cohorts`, `clv`, `campaigns`, `stores`,
    /// `categories`, `households`, `points`, `customers`). On PostgreSQL
    /// the warehouse is maintained by every batch posted
    /// (`docs/scale.md`); the SQLite file is not read, so a report never
    /// shows the books as they were before the move.
    ///
    /// # Errors
    /// [`OfficeDirError::Postgres`] when the database cannot be reached
    /// or is newer; those of loading the keys or opening the ledger.
    pub fn open_warehouse(&self) -> Result<Box<dyn tessera_ledger::Warehouse>, OfficeDirError> {
        match self.postgres_url()? {
            Some(url) => {
                let keys = self.load_keys()?;
                Ok(Box::new(tessera_ledger_pg::posting::PgLedger::open(
                    &url,
                    LedgerKeys::from_issuer(&keys),
                )?))
            }
            None => Ok(Box::new(self.open_sqlite()?.1)),
        }
    }

    /// The books for their reports (reconciliation, exceptions, explained,
    /// liability), wherever they are: the SQLite ledger, or PostgreSQL
    /// once they moved. With `age_gaps_at`, what waited longer than
    /// [`tessera_ledger::GAP_AGE_SECS`] is raised as exceptions first.
    ///
    /// # Errors
    /// As [`OfficeDir::open_warehouse`]; a storage error aging the gaps.
    pub fn open_books_reports(
        &self,
        age_gaps_at: Option<u32>,
    ) -> Result<Box<dyn tessera_ledger::Warehouse>, OfficeDirError> {
        if let Some(url) = self.postgres_url()? {
            let keys = self.load_keys()?;
            let mut pg = tessera_ledger_pg::posting::PgLedger::open(&url, LedgerKeys::from_issuer(&keys))?;
            if let Some(now) = age_gaps_at {
                pg.age_gaps(now, tessera_ledger::GAP_AGE_SECS)?;
            }
            return Ok(Box::new(pg));
        }
        let (_keys, mut ledger) = self.open_sqlite()?;
        if let Some(now) = age_gaps_at {
            ledger.age_gaps(now, tessera_ledger::GAP_AGE_SECS)?;
        }
        Ok(Box::new(ledger))
    }

    /// Whether the office's books are sound, wherever they are (`office
    /// verify`: [`tessera_ledger::Warehouse::soundness`]).
    ///
    /// # Errors
    /// As [`OfficeDir::open_books_reports`]; a storage error.
    pub fn soundness(&self) -> Result<tessera_ledger::Soundness, OfficeDirError> {
        Ok(self.open_books_reports(None)?.soundness()?)
    }

    /// Compares the office's ledger with the PostgreSQL ledger at `url`,
    /// table by table (`office migrate --to URL --verify`).
    ///
    /// # Errors
    /// As [`OfficeDir::migrate_to_postgres`].
    pub fn compare_with_postgres(
        &self,
        url: &str,
    ) -> Result<Vec<tessera_ledger_pg::copy::TableDigest>, OfficeDirError> {
        let (_keys, ledger) = self.open_sqlite()?;
        drop(ledger);
        let mut client = tessera_ledger_pg::connect(url)?;
        Ok(tessera_ledger_pg::copy::compare(
            &self.path.join(LEDGER_FILE),
            &mut client,
        )?)
    }

    /// Every issued approval, newest first, with its state at `now`
    /// (issued, used, expired) and the settled decisions that used it.
    ///
    /// # Errors
    /// Those of [`OfficeDir::open`]; a storage error.
    pub fn approvals(&self, now: u32) -> Result<Vec<tessera_ledger::approvals::ApprovalStatus>, OfficeDirError> {
        let (_keys, books) = self.open_office_books()?;
        Ok(books.approvals(now)?)
    }

    /// The adjustments issued, of one card or of all, wherever the books
    /// are (`office adjust list`).
    ///
    /// # Errors
    /// Those of [`OfficeDir::open_office_books`]; a storage error.
    pub fn adjustments(&self, card: Option<[u8; 8]>) -> Result<Vec<tessera_ledger::AdjustmentRow>, OfficeDirError> {
        let (_keys, books) = self.open_office_books()?;
        Ok(books.adjustments(card)?)
    }
}
