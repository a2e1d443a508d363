//! The spec's worked examples (applet-spec §9), frozen in `fixtures/`:
//! a personalization, an earn and a redeem with the test keys, a seeded
//! card and a seeded terminal. The test regenerates every byte and compares
//! it with the files, then replays the recorded commands into a fresh card
//! and checks every response byte for byte.
//!
//! Regenerate after a deliberate spec change with
//! `TESSERA_REGENERATE_FIXTURES=1 cargo test --test worked_examples`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::path::PathBuf;

use tessera_crypto::cert::certificate;
use tessera_crypto::channel::SessionKeys;
use tessera_crypto::keys::{IssuerDecision, IssuerKeys};
use tessera_crypto::rng::Rng;
use tessera_crypto::sign::profile_digest;
use tessera_crypto::Key;
use tessera_protocol::messages::{AuthCommand, SelectResponse};
use tessera_protocol::Command;
use tessera_simulator::SimCard;
use tessera_suite::{anna, card_id, test_terminal};
use tessera_terminal::issuer::{personalize_traced, IssueParams};
use tessera_terminal::{AuditTrace, FixedClock, SoftwareSam, Terminal, Unblock};
use tessera_transport::Transport;

const CARD_SEED: u64 = 2026;
const TERMINAL_SEED: u64 = 7;
const TERMINAL_ID: u32 = 0x0000_0101;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn render(title: &str, trace: &AuditTrace) -> String {
    let mut s = format!("# {title}\n# '>' command APDU, '<' response APDU (data then SW1 SW2), hex.\n");
    for e in &trace.entries {
        let _ = writeln!(s, "# {}", e.label);
        let _ = writeln!(s, "> {}", hex::encode_upper(&e.command));
        let _ = writeln!(s, "< {}", hex::encode_upper(e.response.as_deref().unwrap_or_default()));
    }
    s
}

struct Examples {
    personalize: String,
    earn: String,
    redeem: String,
    issuer: String,
    unblock: String,
    keyupdate: String,
    adjust: String,
    online: String,
    values: String,
}

/// The masters of key version 2 in the KEY UPDATE example. TEST KEYS ONLY.
const ROTATED_AUTH: &str = "A0A1A2A3A4A5A6A7A8A9AAABACADAEAF";
const ROTATED_CERT: &str = "B0B1B2B3B4B5B6B7B8B9BABBBCBDBEBF";
const ROTATED_ISSUER: &str = "C0C1C2C3C4C5C6C7C8C9CACBCCCDCECF";

fn generate() -> Examples {
    let keys = IssuerKeys::test().unwrap();
    let id = card_id(1);
    let mut card = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::seeded(CARD_SEED)).unwrap();
    let mut perso = AuditTrace::default();
    let signed = personalize_traced(&mut card, &keys, anna(), &IssueParams::default(), &mut perso).unwrap();

    let mut terminal = test_terminal(TERMINAL_ID).with_rng(Rng::seeded(TERMINAL_SEED));
    terminal.tap(&mut card).unwrap().earn(120).unwrap();
    let earn = terminal.take_trace();
    let receipt = {
        let mut s = terminal.tap(&mut card).unwrap();
        s.redeem(50).unwrap()
    };
    let redeem = terminal.take_trace();

    // v2: a refund checked by the card, then the issuer's settlement
    // acknowledgement relayed by the terminal (issuer MAC, §5.9).
    let ack_mac = keys.issuer_mac(&id, IssuerDecision::Settled(3));
    let refund = {
        let mut s = terminal.tap(&mut card).unwrap();
        let r = s.refund(&receipt.record).unwrap();
        s.acknowledge_settlement(3, ack_mac).unwrap();
        r
    };
    let issuer = terminal.take_trace();
    // v2: UNBLOCK, outside a session, issuer sequence 1.
    let unblock_mac = keys.issuer_mac(&id, IssuerDecision::Unblock(1));
    terminal.set_unblocks([(
        id,
        Unblock {
            key_version: 1,
            seq: 1,
            issuer_mac: unblock_mac,
        },
    )]);
    drop(terminal.tap(&mut card).unwrap());
    let unblock = terminal.take_trace();

    // v2: KEY UPDATE to version 2, with the rotation masters below (TEST
    // KEYS ONLY), relayed by a terminal that holds both versions.
    let mut rotated = IssuerKeys::test().unwrap();
    rotated
        .rotate_to(
            Key::from_hex(ROTATED_AUTH).unwrap(),
            Key::from_hex(ROTATED_CERT).unwrap(),
            Key::from_hex(ROTATED_ISSUER).unwrap(),
        )
        .unwrap();
    let update = rotated.key_update(&id, 1).unwrap().command;
    let mut both = Terminal::new(
        SoftwareSam::new(rotated.terminal_keys()),
        FixedClock(tessera_suite::TEST_TIME),
        TERMINAL_ID,
    )
    .with_rng(Rng::seeded(TERMINAL_SEED + 1));
    both.cache_mut()
        .insert(profile_digest(&signed.to_bytes()), signed.clone());
    both.tap(&mut card).unwrap().update_keys(&update).unwrap();
    let keyupdate = both.take_trace();

    // v2.1: ISSUER ADJUST, a goodwill credit of 200 points with adjustment
    // sequence 1, MAC'd with the card's issuer key of its new version 2.
    let adjust_mac = rotated
        .issuer_mac_of(
            &id,
            2,
            IssuerDecision::Adjust {
                seq: 1,
                kind: 0x05,
                points: 200,
            },
        )
        .unwrap();
    let adjusted = both
        .tap(&mut card)
        .unwrap()
        .adjust(&tessera_terminal::Adjustment {
            card_id: id,
            key_version: 2,
            seq: 1,
            kind: tessera_protocol::messages::TxKind::IssuerCredit,
            points: 200,
            issuer_mac: adjust_mac,
        })
        .unwrap();
    let adjust = both.take_trace();

    // v2.2: AUTHORIZATION REQUEST for a redemption of 250 points, the
    // office's approval with "settled up to 4", and the REDEEM carrying it.
    let (request, online_answer, online_receipt) = {
        let mut s = both.tap(&mut card).unwrap();
        let request = s
            .request_authorization(tessera_protocol::messages::TxKind::Redeem, 250, 0)
            .unwrap();
        let answer = tessera_protocol::messages::AuthorizationResponse {
            approved: true,
            settled: 4,
            issuer_mac: rotated
                .issuer_mac_of(
                    &id,
                    2,
                    IssuerDecision::Authorization {
                        cryptogram: request.cryptogram,
                        decision: 0,
                        settled: 4,
                    },
                )
                .unwrap(),
        };
        let r = s.transact_authorized(&request, &answer).unwrap();
        (request, answer, r)
    };
    let online = both.take_trace();

    // Derived values a vendor checks an implementation against.
    let sel_raw = earn.entries[0].response.clone().unwrap();
    let sel = SelectResponse::parse(&sel_raw[..sel_raw.len() - 2]).unwrap();
    let auth_cmd = Command::parse(&earn.entries[1].command).unwrap();
    let auth = AuthCommand::parse(&auth_cmd.data).unwrap();
    let k_auth = keys.card_auth_key(&id);
    let sk = SessionKeys::derive(&k_auth, &auth.host_challenge, &sel.card_challenge);
    let [s_enc, s_mac, s_rmac] = sk.to_hex();
    let k_cert = keys.card_cert_key(&id);
    let mut v = String::new();
    let _ = writeln!(v, "# Worked example values (applet-spec §9). TEST KEYS ONLY.");
    let _ = writeln!(v, "card_id = {}", hex::encode_upper(id));
    let _ = writeln!(v, "K_perso = {}", hex::encode_upper(keys.card_perso_key(&id).bytes()));
    let _ = writeln!(v, "K_auth = {}", hex::encode_upper(k_auth.bytes()));
    let _ = writeln!(v, "K_cert = {}", hex::encode_upper(k_cert.bytes()));
    let _ = writeln!(
        v,
        "issuer_public_key = {}",
        keys.issuer.public().to_hex().to_uppercase()
    );
    let _ = writeln!(v, "profile_body = {}", hex::encode_upper(&signed.body));
    let _ = writeln!(v, "profile_signature = {}", hex::encode_upper(signed.signature));
    let _ = writeln!(
        v,
        "profile_digest = {}",
        hex::encode_upper(profile_digest(&signed.to_bytes()))
    );
    let _ = writeln!(v, "# earn session");
    let _ = writeln!(v, "card_challenge = {}", hex::encode_upper(sel.card_challenge));
    let _ = writeln!(v, "host_challenge = {}", hex::encode_upper(auth.host_challenge));
    let _ = writeln!(v, "S_ENC = {}", s_enc.to_uppercase());
    let _ = writeln!(v, "S_MAC = {}", s_mac.to_uppercase());
    let _ = writeln!(v, "S_RMAC = {}", s_rmac.to_uppercase());
    let _ = writeln!(v, "host_cryptogram = {}", hex::encode_upper(sk.host_cryptogram()));
    let _ = writeln!(v, "card_cryptogram = {}", hex::encode_upper(sk.card_cryptogram()));
    let _ = writeln!(v, "# redeem record and its certificate");
    let _ = writeln!(
        v,
        "redeem_certified_bytes = {}",
        hex::encode_upper(receipt.record.certified_bytes(&id))
    );
    let _ = writeln!(
        v,
        "redeem_certificate = {}",
        hex::encode_upper(certificate(&k_cert, &id, &receipt.record))
    );

    let _ = writeln!(v, "# v2: issuer key and issuer MACs (§5.9)");
    let k_iss = keys.card_issuer_key(&id);
    let _ = writeln!(v, "K_iss = {}", hex::encode_upper(k_iss.bytes()));
    let _ = writeln!(v, "refund_record = {}", hex::encode_upper(refund.record.to_bytes()));
    // The MAC inputs written out as §5.9 gives them, and checked against
    // the issuer's implementation.
    for (name, ins, payload, mac) in [("ack", 0x38u8, 3u32, ack_mac), ("unblock", 0x2C, 1, unblock_mac)] {
        let mut input = b"TI".to_vec();
        input.extend_from_slice(&[0x02, ins]);
        input.extend_from_slice(&id);
        input.extend_from_slice(&payload.to_be_bytes());
        assert_eq!(tessera_crypto::cmac(&k_iss, &input)[..8], mac);
        let _ = writeln!(v, "{name}_issuer_mac_input = {}", hex::encode_upper(&input));
        let _ = writeln!(v, "{name}_issuer_mac = {}", hex::encode_upper(mac));
    }

    let _ = writeln!(
        v,
        "# v2: KEY UPDATE to version 2 (§4.15); rotation masters, TEST KEYS ONLY"
    );
    let _ = writeln!(v, "rotated_auth_master = {ROTATED_AUTH}");
    let _ = writeln!(v, "rotated_cert_master = {ROTATED_CERT}");
    let _ = writeln!(v, "rotated_issuer_master = {ROTATED_ISSUER}");
    let k_upd = tessera_crypto::keys::key_update_key(&k_iss, &id, 2);
    let _ = writeln!(v, "K_update = {}", hex::encode_upper(k_upd.bytes()));
    let _ = writeln!(
        v,
        "new_K_auth = {}",
        hex::encode_upper(rotated.card_auth_key(&id).bytes())
    );
    let _ = writeln!(
        v,
        "new_K_cert = {}",
        hex::encode_upper(rotated.card_cert_key(&id).bytes())
    );
    let _ = writeln!(
        v,
        "new_K_iss = {}",
        hex::encode_upper(rotated.card_issuer_key(&id).bytes())
    );
    let _ = writeln!(v, "key_update_ciphertext = {}", hex::encode_upper(&update.ciphertext));
    let _ = writeln!(v, "key_update_issuer_mac = {}", hex::encode_upper(update.issuer_mac));

    let _ = writeln!(
        v,
        "# v2.1: ISSUER ADJUST, credit of 200 points, sequence 1 (§4.16), under new_K_iss"
    );
    let mut input = b"TI".to_vec();
    input.extend_from_slice(&[0x02, 0x36]);
    input.extend_from_slice(&id);
    input.extend_from_slice(&1u32.to_be_bytes());
    input.push(0x05);
    input.extend_from_slice(&200u32.to_be_bytes());
    assert_eq!(
        tessera_crypto::cmac(&rotated.card_issuer_key(&id), &input)[..8],
        adjust_mac
    );
    let _ = writeln!(v, "adjust_issuer_mac_input = {}", hex::encode_upper(&input));
    let _ = writeln!(v, "adjust_issuer_mac = {}", hex::encode_upper(adjust_mac));
    let _ = writeln!(v, "adjust_record = {}", hex::encode_upper(adjusted.record.to_bytes()));
    let _ = writeln!(
        v,
        "adjust_certificate_key = {}",
        hex::encode_upper(rotated.card_cert_key(&id).bytes())
    );

    let _ = writeln!(
        v,
        "# v2.2: AUTHORIZATION REQUEST for REDEEM 250 and the office's approval, settled up to 4 (§4.17, §5.10), key version 2"
    );
    let mut input = b"TQ".to_vec();
    input.push(0x01);
    input.extend_from_slice(&id);
    input.extend_from_slice(&request.body());
    assert_eq!(
        tessera_crypto::cmac(&rotated.card_cert_key(&id), &input)[..8],
        request.cryptogram
    );
    let _ = writeln!(v, "online_request_cryptogram_input = {}", hex::encode_upper(&input));
    let _ = writeln!(
        v,
        "online_request_cryptogram = {}",
        hex::encode_upper(request.cryptogram)
    );
    let mut input = b"TI".to_vec();
    input.extend_from_slice(&[0x02, 0x3A]);
    input.extend_from_slice(&id);
    input.extend_from_slice(&request.cryptogram);
    input.push(0x00);
    input.extend_from_slice(&4u32.to_be_bytes());
    assert_eq!(
        tessera_crypto::cmac(&rotated.card_issuer_key(&id), &input)[..8],
        online_answer.issuer_mac
    );
    let _ = writeln!(v, "online_issuer_mac_input = {}", hex::encode_upper(&input));
    let _ = writeln!(v, "online_issuer_mac = {}", hex::encode_upper(online_answer.issuer_mac));
    let _ = writeln!(
        v,
        "online_record = {}",
        hex::encode_upper(online_receipt.record.to_bytes())
    );

    Examples {
        personalize: render("Personalization of card 7E57000000000001 with the test keys", &perso),
        earn: render("First tap at terminal 00000101: profile not cached, EARN 120", &earn),
        redeem: render("Second tap: profile cached, REDEEM 50", &redeem),
        issuer: render(
            "Third tap: REFUND of the redemption (#2, 50 points), then ACKNOWLEDGE SETTLEMENT up to #3 with the issuer MAC",
            &issuer,
        ),
        unblock: render("Fourth tap: the issuer's UNBLOCK (sequence 1) before AUTHENTICATE", &unblock),
        keyupdate: render(
            "Fifth tap: KEY UPDATE to key version 2, then SELECT and AUTHENTICATE under the new keys",
            &keyupdate,
        ),
        adjust: render(
            "Sixth tap: ISSUER ADJUST, the issuer's credit of 200 points (adjustment sequence 1)",
            &adjust,
        ),
        online: render(
            "Seventh tap: AUTHORIZATION REQUEST for REDEEM 250, then REDEEM with the office's approval (settled up to 4)",
            &online,
        ),
        values: v,
    }
}

#[test]
fn worked_examples_are_frozen() {
    let ex = generate();
    let files = [
        ("traces/personalize.apdu", &ex.personalize),
        ("traces/earn.apdu", &ex.earn),
        ("traces/redeem.apdu", &ex.redeem),
        ("traces/issuer.apdu", &ex.issuer),
        ("traces/unblock.apdu", &ex.unblock),
        ("traces/keyupdate.apdu", &ex.keyupdate),
        ("traces/adjust.apdu", &ex.adjust),
        ("traces/online.apdu", &ex.online),
        ("traces/values.txt", &ex.values),
    ];
    let dir = fixtures();
    if std::env::var_os("TESSERA_REGENERATE_FIXTURES").is_some() {
        std::fs::create_dir_all(dir.join("traces")).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }
    for (name, text) in files {
        let stored = std::fs::read_to_string(dir.join(name)).unwrap();
        assert_eq!(&stored, text, "fixtures/{name} differs from what the code produces");
    }
}

/// Replays a trace file into `card`, checking every response byte.
fn replay(card: &mut SimCard, file: &str) -> usize {
    let text = std::fs::read_to_string(fixtures().join(file)).unwrap();
    let mut count = 0;
    let mut pending: Option<Vec<u8>> = None;
    for line in text.lines() {
        if let Some(cmd) = line.strip_prefix("> ") {
            pending = Some(hex::decode(cmd).unwrap());
        } else if let Some(resp) = line.strip_prefix("< ") {
            let cmd = pending.take().unwrap();
            let got = card.transmit(&cmd).unwrap();
            assert_eq!(
                hex::encode_upper(got),
                resp,
                "{file}: response to {}",
                hex::encode_upper(&cmd)
            );
            count += 1;
        }
    }
    count
}

#[test]
fn recorded_traces_replay_byte_for_byte() {
    let keys = IssuerKeys::test().unwrap();
    let id = card_id(1);
    let mut card = SimCard::manufacture(id, &keys.card_perso_key(&id), Rng::seeded(CARD_SEED)).unwrap();
    assert_eq!(replay(&mut card, "traces/personalize.apdu"), 2);
    assert_eq!(replay(&mut card, "traces/earn.apdu"), 4);
    assert_eq!(replay(&mut card, "traces/redeem.apdu"), 3);
    let st = card.state().unwrap();
    assert_eq!((st.balance, st.counter), (70, 2));
    assert_eq!(replay(&mut card, "traces/issuer.apdu"), 4);
    let st = card.state().unwrap();
    assert_eq!((st.balance, st.counter), (120, 3));
    assert_eq!(
        (st.velocity.unsettled_redeems, st.velocity.settled_counter),
        (0, 3),
        "settled up to 3: no redemption after it"
    );
    assert_eq!(replay(&mut card, "traces/unblock.apdu"), 3);
    assert_eq!(card.state().unwrap().issuer_seq, 1);
    assert_eq!(replay(&mut card, "traces/keyupdate.apdu"), 5);
    assert_eq!(card.state().unwrap().key_version, 2);
    assert_eq!(replay(&mut card, "traces/adjust.apdu"), 3);
    let st = card.state().unwrap();
    assert_eq!((st.balance, st.counter, st.adjust_seq), (320, 4, 1));
    assert_eq!(replay(&mut card, "traces/online.apdu"), 4);
    let st = card.state().unwrap();
    assert_eq!((st.balance, st.counter), (70, 5));
    assert_eq!(
        (
            st.velocity.unsettled_redeems,
            st.velocity.unsettled_points,
            st.velocity.settled_counter
        ),
        (1, 250, 4)
    );
    assert!(st.last_record().unwrap().online);
}
