//! Bad input to every command card application v2 added or changed gets
//! its status word (applet-spec §4.9, §4.10, §4.13, §4.14, §4.16) and changes
//! nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tessera_crypto::channel::{SecureChannel, SessionKeys};
use tessera_crypto::keys::{IssuerDecision, IssuerKeys};
use tessera_protocol::apdu::{Command, Response};
use tessera_protocol::ins::{CLA_ISO, CLA_PROPRIETARY, CLA_SECURE};
use tessera_protocol::messages::{AuthCommand, SelectResponse};
use tessera_protocol::tlv::{encode, encode_all, tags};
use tessera_protocol::{Ins, StatusWord, AID};
use tessera_simulator::SimCard;
use tessera_suite::{card_id, card_with_history, issuer_mac};
use tessera_transport::Transport;

fn sw(resp: &[u8]) -> StatusWord {
    Response::parse(resp).unwrap().sw
}

fn select(card: &mut SimCard) -> SelectResponse {
    let r = card
        .transmit(&Command::new(CLA_ISO, Ins::Select, 4, 0, AID.to_vec(), Some(256)).to_bytes())
        .unwrap();
    SelectResponse::parse(&r[..r.len() - 2]).unwrap()
}

/// SELECT + AUTHENTICATE with the test keys, as a (rogue) till would.
fn session(card: &mut SimCard, id: &[u8; 8]) -> SecureChannel {
    let sel = select(card);
    let keys = IssuerKeys::test().unwrap();
    let sk = SessionKeys::derive(&keys.card_auth_key(id), &[3; 8], &sel.card_challenge);
    let auth = AuthCommand {
        host_challenge: [3; 8],
        host_cryptogram: sk.host_cryptogram(),
    };
    let r = card
        .transmit(&Command::new(CLA_PROPRIETARY, Ins::Authenticate, 0, 0, auth.to_bytes(), Some(256)).to_bytes())
        .unwrap();
    assert_eq!(sw(&r), StatusWord::Ok);
    SecureChannel::new(sk)
}

fn secure(card: &mut SimCard, ch: &mut SecureChannel, ins: Ins, p1: u8, data: &[u8]) -> StatusWord {
    let cmd = ch.protect_command(CLA_SECURE, ins.into(), p1, 0, data, Some(256));
    sw(&card.transmit(&cmd.to_bytes()).unwrap())
}

#[test]
fn acknowledge_settlement_bad_input() {
    let mut card = card_with_history(500);
    let id = card_id(500);
    let before = card.memory();
    let good = issuer_mac(&id, IssuerDecision::Settled(2));
    let cases: Vec<(Vec<u8>, StatusWord)> = vec![
        // v1 layout: no issuer MAC.
        (encode(tags::COUNTER, &2u32.to_be_bytes()), StatusWord::WrongData),
        // A MAC of the wrong length.
        (
            encode_all(&[(tags::COUNTER, &2u32.to_be_bytes()), (tags::ISSUER_MAC, &good[..7])]),
            StatusWord::WrongData,
        ),
        // An extra object.
        (
            encode_all(&[
                (tags::COUNTER, &2u32.to_be_bytes()),
                (tags::ISSUER_MAC, &good),
                (tags::AMOUNT, &[0, 0, 0, 1]),
            ]),
            StatusWord::WrongData,
        ),
        // N beyond the card's counter, even with its genuine MAC.
        (
            encode_all(&[
                (tags::COUNTER, &3u32.to_be_bytes()),
                (tags::ISSUER_MAC, &issuer_mac(&id, IssuerDecision::Settled(3))),
            ]),
            StatusWord::WrongData,
        ),
        // The MAC of another N.
        (
            encode_all(&[
                (tags::COUNTER, &2u32.to_be_bytes()),
                (tags::ISSUER_MAC, &issuer_mac(&id, IssuerDecision::Settled(1))),
            ]),
            StatusWord::BadMac,
        ),
        // The MAC of an UNBLOCK with the same number.
        (
            encode_all(&[
                (tags::COUNTER, &2u32.to_be_bytes()),
                (tags::ISSUER_MAC, &issuer_mac(&id, IssuerDecision::Unblock(2))),
            ]),
            StatusWord::BadMac,
        ),
    ];
    for (data, expected) in cases {
        let mut ch = session(&mut card, &id);
        assert_eq!(
            secure(&mut card, &mut ch, Ins::AckSettlement, 0, &data),
            expected,
            "{data:02X?}"
        );
        let mut m = card.memory();
        m.recover();
        assert_eq!(m.cells(), before.cells(), "{data:02X?} changed the card");
    }
    let mut ch = session(&mut card, &id);
    assert_eq!(
        secure(&mut card, &mut ch, Ins::AckSettlement, 1, &[]),
        StatusWord::WrongP1P2
    );
}

#[test]
fn unblock_bad_input() {
    let mut card = card_with_history(501);
    let id = card_id(501);
    let before = card.memory();
    let good = issuer_mac(&id, IssuerDecision::Unblock(1));
    let send = |card: &mut SimCard, cla: u8, p1: u8, data: Vec<u8>| -> StatusWord {
        select(card);
        let mut c = Command::new(CLA_PROPRIETARY, Ins::Unblock, p1, 0, data, None);
        c.cla = cla;
        sw(&card.transmit(&c.to_bytes()).unwrap())
    };
    let seq1 = 1u32.to_be_bytes();
    let cases: Vec<(u8, u8, Vec<u8>, StatusWord)> = vec![
        (0x80, 0, Vec::new(), StatusWord::WrongData),
        (0x80, 0, encode(tags::ISSUER_SEQ, &seq1), StatusWord::WrongData),
        (
            0x80,
            0,
            encode_all(&[(tags::ISSUER_SEQ, &seq1[1..]), (tags::ISSUER_MAC, &good)]),
            StatusWord::WrongData,
        ),
        (
            0x80,
            1,
            encode_all(&[(tags::ISSUER_SEQ, &seq1), (tags::ISSUER_MAC, &good)]),
            StatusWord::WrongP1P2,
        ),
        (
            0x84,
            0,
            encode_all(&[(tags::ISSUER_SEQ, &seq1), (tags::ISSUER_MAC, &good)]),
            StatusWord::ClaNotSupported,
        ),
        (
            0x80,
            0,
            encode_all(&[(tags::ISSUER_SEQ, &2u32.to_be_bytes()), (tags::ISSUER_MAC, &good)]),
            StatusWord::BadMac,
        ),
        // Sequence 0 is never above the card's (0): refused even with its MAC.
        (
            0x80,
            0,
            encode_all(&[
                (tags::ISSUER_SEQ, &0u32.to_be_bytes()),
                (tags::ISSUER_MAC, &issuer_mac(&id, IssuerDecision::Unblock(0))),
            ]),
            StatusWord::WrongData,
        ),
    ];
    for (cla, p1, data, expected) in cases {
        assert_eq!(
            send(&mut card, cla, p1, data.clone()),
            expected,
            "{cla:02X} {p1} {data:02X?}"
        );
        let mut m = card.memory();
        m.recover();
        assert_eq!(m.cells(), before.cells(), "{data:02X?} changed the card");
    }
    // Without a selection.
    let mut fresh = SimCard::from_eeprom(before.clone(), tessera_crypto::rng::Rng::seeded(1)).unwrap();
    let c = Command::new(
        CLA_PROPRIETARY,
        Ins::Unblock,
        0,
        0,
        encode_all(&[(tags::ISSUER_SEQ, &seq1), (tags::ISSUER_MAC, &good)]),
        None,
    );
    assert_eq!(
        sw(&fresh.transmit(&c.to_bytes()).unwrap()),
        StatusWord::ConditionsNotSatisfied
    );
}

#[test]
fn update_profile_and_refund_bad_input() {
    let mut card = card_with_history(502);
    let id = card_id(502);
    let before = card.memory();
    // UPDATE PROFILE in the v1 layout (no issuer MAC): 6A80.
    let mut ch = session(&mut card, &id);
    let ct = ch.encrypt(&card.state().unwrap().profile);
    assert_eq!(
        secure(&mut card, &mut ch, Ins::UpdateProfile, 0, &encode(tags::ENCRYPTED, &ct)),
        StatusWord::WrongData
    );
    // REFUND: reference 0, beyond the counter, missing; of the wrong kind;
    // more than the original.
    let refund = |amount: u32, reference: Option<u32>| {
        let mut items: Vec<(u32, Vec<u8>)> = vec![
            (tags::AMOUNT, amount.to_be_bytes().to_vec()),
            (tags::TERMINAL_ID, 1u32.to_be_bytes().to_vec()),
            (tags::TERMINAL_SEQ, 99u32.to_be_bytes().to_vec()),
            (tags::TIME, 1u32.to_be_bytes().to_vec()),
            (tags::STORE_ID, 1u32.to_be_bytes().to_vec()),
        ];
        if let Some(r) = reference {
            items.push((tags::REFERENCE, r.to_be_bytes().to_vec()));
        }
        let refs: Vec<(u32, &[u8])> = items.iter().map(|(t, v)| (*t, v.as_slice())).collect();
        encode_all(&refs)
    };
    let cases = [
        (0x04, refund(100, Some(0)), StatusWord::WrongData),
        (0x04, refund(100, Some(3)), StatusWord::WrongData),
        (0x04, refund(100, None), StatusWord::WrongData),
        (0x04, refund(100, Some(1)), StatusWord::ReferenceMismatch),
        (0x03, refund(100, Some(2)), StatusWord::ReferenceMismatch),
        (0x04, refund(101, Some(2)), StatusWord::RefundExceedsOriginal),
        (0x03, refund(501, Some(1)), StatusWord::RefundExceedsOriginal),
        (0x05, refund(100, Some(2)), StatusWord::WrongP1P2),
    ];
    for (p1, data, expected) in cases {
        let mut ch = session(&mut card, &id);
        assert_eq!(
            secure(&mut card, &mut ch, Ins::Refund, p1, &data),
            expected,
            "P1 {p1:02X} {data:02X?}"
        );
        let mut m = card.memory();
        m.recover();
        assert_eq!(m.cells(), before.cells(), "P1 {p1:02X} changed the card");
    }
}

/// A card personalized under application v1 has no issuer key: it answers
/// every issuer decision with 6985, whatever the MAC.
#[test]
fn v1_card_refuses_issuer_decisions() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/images/card-v1.json");
    let mut card = SimCard::from_eeprom(
        tessera_simulator::image::from_bytes(&std::fs::read(fixture).unwrap()).unwrap(),
        tessera_crypto::rng::Rng::seeded(1),
    )
    .unwrap();
    let id = card.state().unwrap().card_id;
    let mut ch = session(&mut card, &id);
    let data = encode_all(&[(tags::COUNTER, &2u32.to_be_bytes()), (tags::ISSUER_MAC, &[0; 8])]);
    assert_eq!(
        secure(&mut card, &mut ch, Ins::AckSettlement, 0, &data),
        StatusWord::ConditionsNotSatisfied
    );
    // v2.2: a card that cannot check the office's answer does not ask.
    let ask = encode_all(&[(tags::AMOUNT, &10u32.to_be_bytes()), (tags::TERMINAL_ID, &[0, 0, 0, 9])]);
    assert_eq!(
        secure(&mut card, &mut ch, Ins::AuthorizationRequest, 2, &ask),
        StatusWord::ConditionsNotSatisfied
    );
    select(&mut card);
    let u = encode_all(&[(tags::ISSUER_SEQ, &1u32.to_be_bytes()), (tags::ISSUER_MAC, &[0; 8])]);
    let c = Command::new(CLA_PROPRIETARY, Ins::Unblock, 0, 0, u, None);
    assert_eq!(
        sw(&card.transmit(&c.to_bytes()).unwrap()),
        StatusWord::ConditionsNotSatisfied
    );
}

#[test]
fn key_update_bad_input() {
    let mut card = card_with_history(503);
    let id = card_id(503);
    let before = card.memory();
    let mut rotated = IssuerKeys::test().unwrap();
    rotated.rotate().unwrap();
    let good = rotated.key_update(&id, 1).unwrap().command;
    let v = [good.key_version];
    let cases: Vec<(u8, Vec<u8>, StatusWord)> = vec![
        // No issuer MAC.
        (
            0,
            encode_all(&[(tags::KEY_VERSION, &v), (tags::ENCRYPTED, &good.ciphertext)]),
            StatusWord::WrongData,
        ),
        // An extra object.
        (
            0,
            encode_all(&[
                (tags::KEY_VERSION, &v),
                (tags::ENCRYPTED, &good.ciphertext),
                (tags::ISSUER_MAC, &good.issuer_mac),
                (tags::AMOUNT, &[0, 0, 0, 1]),
            ]),
            StatusWord::WrongData,
        ),
        // Another version than the MAC covers.
        (
            0,
            encode_all(&[
                (tags::KEY_VERSION, &[3]),
                (tags::ENCRYPTED, &good.ciphertext),
                (tags::ISSUER_MAC, &good.issuer_mac),
            ]),
            StatusWord::BadMac,
        ),
        // A ciphertext cut short.
        (
            0,
            encode_all(&[
                (tags::KEY_VERSION, &v),
                (tags::ENCRYPTED, &good.ciphertext[..48]),
                (tags::ISSUER_MAC, &good.issuer_mac),
            ]),
            StatusWord::BadMac,
        ),
        (1, good.to_bytes(), StatusWord::WrongP1P2),
    ];
    for (p1, data, expected) in cases {
        let mut ch = session(&mut card, &id);
        assert_eq!(
            secure(&mut card, &mut ch, Ins::KeyUpdate, p1, &data),
            expected,
            "{data:02X?}"
        );
        let mut m = card.memory();
        m.recover();
        assert_eq!(m.cells(), before.cells(), "{data:02X?} changed the card");
    }
}

/// ISSUER ADJUST (v2.1, §4.16): every malformed or impossible command gets
/// its status word, in the order of the spec, and changes nothing; the raw
/// status words a till never acts on are those of the card.
#[test]
fn issuer_adjust_bad_input() {
    let mut card = card_with_history(510); // balance 400, counter 2
    let id = card_id(510);
    let before = card.memory();
    let mac = |seq: u32, kind: u8, points: u32| issuer_mac(&id, IssuerDecision::Adjust { seq, kind, points });
    let data = |points: u32, seq: u32, m: [u8; 8]| {
        encode_all(&[
            (tags::AMOUNT, &points.to_be_bytes()),
            (tags::TERMINAL_ID, &[0, 0, 0, 9]),
            (tags::TERMINAL_SEQ, &[0, 0, 0, 1]),
            (tags::TIME, &[0x6B, 0x09, 0x70, 0xC0]),
            (tags::ADJUST_SEQ, &seq.to_be_bytes()),
            (tags::ISSUER_MAC, &m),
        ])
    };
    let good = data(10, 1, mac(1, 5, 10));
    let mut with_store = good.clone();
    with_store.extend(encode(tags::STORE_ID, &[0, 0, 0, 1]));
    let cases: Vec<(u8, Vec<u8>, StatusWord)> = vec![
        // P1 other than 05 / 06.
        (0x00, good.clone(), StatusWord::WrongP1P2),
        (0x03, good.clone(), StatusWord::WrongP1P2),
        // Missing the issuer MAC, or an extra object.
        (0x05, good[..good.len() - 10].to_vec(), StatusWord::WrongData),
        (0x05, with_store, StatusWord::WrongData),
        // Zero points, even with its genuine MAC.
        (0x05, data(0, 1, mac(1, 5, 0)), StatusWord::WrongData),
        // Sequence 0, or 2 before 1 (no gaps), with genuine MACs.
        (0x05, data(10, 0, mac(0, 5, 10)), StatusWord::WrongData),
        (0x05, data(10, 2, mac(2, 5, 10)), StatusWord::WrongData),
        // A debit above the balance, with its genuine MAC.
        (0x06, data(401, 1, mac(1, 6, 401)), StatusWord::InsufficientBalance),
        // A credit that would overflow.
        (
            0x05,
            data(u32::MAX, 1, mac(1, 5, u32::MAX)),
            StatusWord::BalanceOverflow,
        ),
    ];
    for (p1, d, want) in cases {
        let mut ch = session(&mut card, &id);
        assert_eq!(
            secure(&mut card, &mut ch, Ins::IssuerAdjust, p1, &d),
            want,
            "P1 {p1:02X} {}",
            hex::encode(&d)
        );
    }
    // A credit MAC'd as a credit, sent as a debit: the MAC binds the kind
    // (6988, and the session is closed).
    let mut ch = session(&mut card, &id);
    assert_eq!(
        secure(&mut card, &mut ch, Ins::IssuerAdjust, 0x06, &good),
        StatusWord::BadMac
    );
    assert_eq!(
        secure(&mut card, &mut ch, Ins::ReadLog, 1, &[]),
        StatusWord::SecurityNotSatisfied
    );
    assert_eq!(card.memory().cells(), before.cells(), "nothing changed");
    let mut ch = session(&mut card, &id);
    assert_eq!(
        secure(&mut card, &mut ch, Ins::IssuerAdjust, 0x05, &good),
        StatusWord::Ok
    );
    assert_eq!(card.state().unwrap().balance, 410);
}

#[test]
fn authorization_request_and_answer_bad_input() {
    let mut card = card_with_history(511); // balance 400, counter 2
    let id = card_id(511);
    let before = card.memory();
    let ask = |amount: u32, reference: Option<u32>| {
        let mut d = encode_all(&[
            (tags::AMOUNT, &amount.to_be_bytes()),
            (tags::TERMINAL_ID, &[0, 0, 0, 9]),
        ]);
        if let Some(r) = reference {
            d.extend(encode(tags::REFERENCE, &r.to_be_bytes()));
        }
        d
    };
    let cases: Vec<(u8, Vec<u8>, StatusWord)> = vec![
        // P1 not a kind a request can be for (00, an adjustment, 07).
        (0x00, ask(10, None), StatusWord::WrongP1P2),
        (0x05, ask(10, None), StatusWord::WrongP1P2),
        (0x07, ask(10, None), StatusWord::WrongP1P2),
        // No points; a refund without its reference, an earn with one; a
        // reference beyond the counter; an extra object.
        (0x02, ask(0, None), StatusWord::WrongData),
        (0x04, ask(10, None), StatusWord::WrongData),
        (0x01, ask(10, Some(1)), StatusWord::WrongData),
        (0x04, ask(10, Some(3)), StatusWord::WrongData),
        (
            0x02,
            [ask(10, None), encode(tags::TIME, &[0; 4])].concat(),
            StatusWord::WrongData,
        ),
        (0x02, ask(10, None)[..6].to_vec(), StatusWord::WrongData),
    ];
    for (p1, d, want) in cases {
        let mut ch = session(&mut card, &id);
        assert_eq!(
            secure(&mut card, &mut ch, Ins::AuthorizationRequest, p1, &d),
            want,
            "P1 {p1:02X} {}",
            hex::encode(&d)
        );
    }
    // Outside a session: 6982.
    select(&mut card);
    let c = Command::new(CLA_SECURE, Ins::AuthorizationRequest, 2, 0, ask(10, None), Some(256));
    assert_eq!(
        sw(&card.transmit(&c.to_bytes()).unwrap()),
        StatusWord::SecurityNotSatisfied
    );
    // An answer object of the wrong length or with an unknown decision
    // byte, on a REDEEM: 6A80.
    let redeem = |answer: &[u8]| {
        let mut d = encode_all(&[
            (tags::AMOUNT, &10u32.to_be_bytes()),
            (tags::TERMINAL_ID, &[0, 0, 0, 9]),
            (tags::TERMINAL_SEQ, &[0, 0, 0, 1]),
            (tags::TIME, &[0x6B, 0x09, 0x70, 0xC0]),
            (tags::STORE_ID, &[0, 0, 0, 1]),
        ]);
        d.extend(encode(tags::AUTH_RESPONSE, answer));
        d
    };
    for bad in [vec![0u8; 12], vec![0u8; 14], [vec![2u8], vec![0; 12]].concat()] {
        let mut ch = session(&mut card, &id);
        assert_eq!(
            secure(&mut card, &mut ch, Ins::AuthorizationRequest, 2, &ask(10, None)),
            StatusWord::Ok
        );
        assert_eq!(
            secure(&mut card, &mut ch, Ins::Redeem, 0, &redeem(&bad)),
            StatusWord::WrongData
        );
    }
    // A genuine decline relayed anyway: 9107, and nothing changes; an
    // approval after an ISSUER ADJUST moved the counter: 6A80.
    let mut ch = session(&mut card, &id);
    let cmd = ch.protect_command(
        CLA_SECURE,
        Ins::AuthorizationRequest.into(),
        2,
        0,
        &ask(10, None),
        Some(256),
    );
    let resp = Response::parse(&card.transmit(&cmd.to_bytes()).unwrap()).unwrap();
    let body = ch.verify_response(&resp).unwrap();
    let list = tessera_protocol::tlv::TlvList::parse(&body).unwrap();
    let request =
        tessera_protocol::messages::AuthorizationRequest::parse(list.require(tags::AUTH_REQUEST).unwrap()).unwrap();
    let answer = |decision: u8| {
        let m = issuer_mac(
            &id,
            IssuerDecision::Authorization {
                cryptogram: request.cryptogram,
                decision,
                settled: 0,
            },
        );
        [vec![decision, 0, 0, 0, 0], m.to_vec()].concat()
    };
    assert_eq!(
        secure(&mut card, &mut ch, Ins::Redeem, 0, &redeem(&answer(1))),
        StatusWord::DeclinedByIssuer
    );
    assert_eq!(card.memory().cells(), before.cells(), "a decline changes nothing");
    // A well-formed answer without a request in the session: 6985.
    let mut ch = session(&mut card, &id);
    let m = issuer_mac(
        &id,
        IssuerDecision::Authorization {
            cryptogram: [0; 8],
            decision: 0,
            settled: 0,
        },
    );
    assert_eq!(
        secure(
            &mut card,
            &mut ch,
            Ins::Redeem,
            0,
            &redeem(&[[0u8; 5].as_slice(), &m].concat())
        ),
        StatusWord::ConditionsNotSatisfied
    );
    assert_eq!(card.memory().cells(), before.cells(), "nothing changed");
}
