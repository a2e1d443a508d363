//! The till's keys in a PKCS#11 token (SoftHSM2), end to end through the
//! binary: `office export-terminal --pkcs11-module` loads the masters into
//! the token and writes a bundle without them; `pos earn --pkcs11-module`
//! runs on the token. Each test has its own SoftHSM2 configuration and
//! token directory, given to the binary as `SOFTHSM2_CONF`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use tessera_pkcs11::softhsm::SoftHsmToken;

struct Env {
    dir: tempfile::TempDir,
    token: SoftHsmToken,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let hsm = dir.path().join("hsm");
        std::fs::create_dir_all(&hsm).unwrap();
        let token = SoftHsmToken::create(&hsm, "till-7", "87654321", "246810")
            .unwrap_or_else(|e| panic!("SoftHSM2 is needed for this test: {e}"));
        Self { dir, token }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn s(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }

    fn module(&self) -> String {
        self.token.module.to_str().unwrap().to_owned()
    }

    fn run(&self, args: &[&str], pin: Option<&str>) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
        c.args(args)
            .env("TESSERA_TERMINAL_DIR", self.path("terminal"))
            .env("SOFTHSM2_CONF", &self.token.conf)
            .env_remove("TESSERA_NOW")
            .env_remove("TESSERA_PKCS11_PIN")
            .stdin(Stdio::null());
        if let Some(p) = pin {
            c.env("TESSERA_PKCS11_PIN", p);
        }
        c.output().unwrap()
    }

    fn ok(&self, args: &[&str], pin: Option<&str>) -> String {
        let o = self.run(args, pin);
        assert!(
            o.status.success(),
            "tessera {} failed ({:?}): {}{}",
            args.join(" "),
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// An office, and terminal 7's bundle with its masters in the token.
    fn office_and_till(&self) {
        self.ok(&["office", "init", "--dir", &self.s("office")], None);
        write_private(&self.path("pin"), format!("{}\n", self.token.user_pin).as_bytes());
        let out = self.ok(
            &[
                "office",
                "export-terminal",
                "--dir",
                &self.s("office"),
                "--terminal-id",
                "7",
                "--out",
                &self.s("t7.json"),
                "--plain-http",
                "--pkcs11-module",
                &self.module(),
                "--token-label",
                "till-7",
                "--pin-file",
                &self.s("pin"),
                "--json",
            ],
            None,
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["pkcs11"]["imported"], serde_json::json!([2]), "{v}");
        self.ok(
            &[
                "office",
                "issue",
                "--dir",
                &self.s("office"),
                "--card",
                &self.s("anna.card"),
                "--name",
                "Анна Петрова",
                "--birth-date",
                "1990-03-14",
                "--city",
                "Нижний Новгород",
            ],
            None,
        );
    }
}

fn write_private(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

#[test]
fn export_to_a_token_then_earn_with_it() {
    let env = Env::new();
    env.office_and_till();

    // The bundle holds no master: not the field, not the value.
    let text = std::fs::read_to_string(env.path("t7.json")).unwrap();
    let bundle: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(bundle["format"], "tessera-terminal-bundle-3-pkcs11", "{text}");
    assert!(bundle.get("auth_masters").is_none(), "{text}");
    assert_eq!(bundle["pkcs11"]["token_label"], "till-7");
    assert_eq!(bundle["pkcs11"]["key_versions"], serde_json::json!([2]));
    let store: Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("office/issuer-keys.json")).unwrap()).unwrap();
    let master = store["auth_master"].as_str().unwrap();
    assert_eq!(master.len(), 32);
    assert!(!text.contains(master), "the master leaked into the bundle");

    let keys = env.s("t7.json");
    let card = env.s("anna.card");
    let module = env.module();
    let earn = ["pos", "earn", "--card", &card, "--amount", "12.50", "--keys", &keys];
    let with_token = [&earn[..], &["--pkcs11-module", &module, "--json"]].concat();
    let out = env.ok(&with_token, Some(&env.token.user_pin));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["outcome"]["decision"], "approve", "{v}");
    let record = &v["outcome"]["receipt"]["record"];
    let balance = record["balance_after"].as_u64().unwrap();
    assert!(balance > 0, "points were earned: {v}");
    assert_eq!(record["points"].as_u64(), Some(balance), "{v}");

    // Again with the PIN from a file and the label given: the balance grows.
    let pin_file = env.s("pin");
    let again = [
        &earn[..],
        &[
            "--pkcs11-module",
            &module,
            "--token-label",
            "till-7",
            "--pin-file",
            &pin_file,
            "--json",
        ],
    ]
    .concat();
    let v: Value = serde_json::from_str(&env.ok(&again, None)).unwrap();
    assert_eq!(
        v["outcome"]["receipt"]["record"]["balance_after"].as_u64().unwrap(),
        2 * balance,
        "{v}"
    );

    // Without the token the bundle is refused, never run in software.
    let o = env.run(&earn, Some(&env.token.user_pin));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("this bundle keeps its masters in a PKCS#11 token") && err.contains("--pkcs11-module"),
        "{err}"
    );

    // No PIN, a wrong PIN, a wrong label, a missing module: each says what to do.
    let o = env.run(&with_token, None);
    let err = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("TESSERA_PKCS11_PIN"), "{err}");
    let o = env.run(&with_token, Some("000000"));
    let err = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("refused the PIN"), "{err}");
    let o = env.run(
        &[&earn[..], &["--pkcs11-module", &module, "--token-label", "till-8"]].concat(),
        Some(&env.token.user_pin),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("no PKCS#11 token labelled \"till-8\""), "{err}");
    let o = env.run(
        &[&earn[..], &["--pkcs11-module", "/nonexistent/libpkcs11.so"]].concat(),
        Some(&env.token.user_pin),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("could not be loaded"), "{err}");
}

#[test]
fn a_software_bundle_is_not_opened_with_a_token() {
    let env = Env::new();
    env.ok(&["office", "init", "--dir", &env.s("office")], None);
    env.ok(
        &[
            "office",
            "export-terminal",
            "--dir",
            &env.s("office"),
            "--terminal-id",
            "7",
            "--out",
            &env.s("t7.json"),
            "--plain-http",
        ],
        None,
    );
    let text = std::fs::read_to_string(env.path("t7.json")).unwrap();
    assert!(text.contains("auth_masters"), "software bundles are unchanged");
    let o = env.run(
        &[
            "pos",
            "status",
            "--keys",
            &env.s("t7.json"),
            "--pkcs11-module",
            &env.module(),
        ],
        Some(&env.token.user_pin),
    );
    // Status needs no secret key: it reads the public keys only.
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A token given for export without a label is a usage error.
    let o = env.run(
        &[
            "office",
            "export-terminal",
            "--dir",
            &env.s("office"),
            "--terminal-id",
            "8",
            "--out",
            &env.s("t8.json"),
            "--plain-http",
            "--pkcs11-module",
            &env.module(),
        ],
        Some(&env.token.user_pin),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(!env.path("t8.json").exists());
}
