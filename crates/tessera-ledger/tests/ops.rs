//! The office's daily operations on the ledger: stores and terminals, the
//! hotlist as entries with versions, customer search, the audit anchor.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tessera_ledger::books::OfficeBooks;
use tessera_ledger::{AuditAnchor, CustomerQuery, LedgerError, NewCustomer};
use tessera_protocol::profile::Date;

fn customer(name: &str, city: &str) -> NewCustomer {
    NewCustomer {
        name: name.into(),
        birth_date: Date {
            year: 1990,
            month: 3,
            day: 14,
        },
        home_city: city.into(),
        household: *b"HH000042",
        preferences: vec![],
        tier: 0,
    }
}

#[test]
fn stores_terminals_and_the_store_of_a_terminal() {
    let shop = Shop::new();
    let mut ledger = shop.ledger();
    ledger.register_terminal(7, T0).unwrap();
    ledger.add_store(3, " Центральный ", "Москва", T0).unwrap();
    assert!(matches!(
        ledger.add_store(3, "Other", "", T0),
        Err(LedgerError::StoreExists(3))
    ));
    assert!(matches!(
        ledger.add_store(4, " ", "", T0),
        Err(LedgerError::Malformed(_))
    ));
    assert!(matches!(
        ledger.assign_terminal(7, 9),
        Err(LedgerError::UnknownStore(9))
    ));
    assert!(matches!(
        ledger.assign_terminal(8, 3),
        Err(LedgerError::UnknownTerminal(8))
    ));
    assert_eq!(ledger.terminal_store(7).unwrap(), None);
    ledger.assign_terminal(7, 3).unwrap();
    let store = ledger.terminal_store(7).unwrap().unwrap();
    assert_eq!(
        (store.store_id, store.name.as_str(), store.terminals),
        (3, "Центральный", 1)
    );
    assert_eq!(ledger.terminal_store(99).unwrap(), None);

    assert!(ledger.revoke_terminal_for(7, "stolen", T0 + 5).unwrap());
    assert!(!ledger.revoke_terminal_for(7, "again", T0 + 9).unwrap());
    assert!(matches!(
        ledger.revoke_terminal_for(7, " ", T0),
        Err(LedgerError::Malformed(_))
    ));
    let t = &ledger.terminals().unwrap()[0];
    assert_eq!(
        (t.revoked_at, t.revoke_reason.as_deref(), t.store_name.as_deref()),
        (Some(T0 + 5), Some("stolen"), Some("Центральный"))
    );
}

#[test]
fn the_hotlist_version_goes_up_with_every_change_and_only_then() {
    let shop = Shop::new();
    let mut ledger = shop.ledger();
    let id = ledger.register_customer(&customer("Анна", "")).unwrap();
    ledger.register_card(card_id(1), id, 1, T0).unwrap();
    assert!(matches!(
        ledger.hotlist_add(card_id(2), "lost", T0),
        Err(LedgerError::NotIssued(_))
    ));
    assert!(matches!(
        ledger.hotlist_add(card_id(1), "", T0),
        Err(LedgerError::Malformed(_))
    ));
    assert_eq!(ledger.hotlist().unwrap().version, 0);
    let c = ledger.hotlist_add(card_id(1), "lost", T0).unwrap();
    assert_eq!((c.version, c.changed), (1, true));
    let c = ledger.hotlist_add(card_id(1), "lost", T0).unwrap();
    assert_eq!((c.version, c.changed), (1, false));
    assert_eq!(ledger.hotlist_entries().unwrap().1[0].reason, "lost");
    let c = ledger.hotlist_remove(card_id(1)).unwrap();
    assert_eq!((c.version, c.changed), (2, true));
    let c = ledger.hotlist_remove(card_id(1)).unwrap();
    assert_eq!((c.version, c.changed), (2, false));
    let h = ledger.hotlist().unwrap();
    assert_eq!((h.version, h.cards.len()), (2, 0));
}

#[test]
fn customers_are_found_by_name_city_or_card_in_any_case() {
    let shop = Shop::new();
    let mut ledger = shop.ledger();
    let a = ledger
        .register_customer(&customer("Анна Петрова", "Нижний Новгород"))
        .unwrap();
    let b = ledger.register_customer(&customer("ÅSA Öberg", "Malmö")).unwrap();
    ledger.register_card(card_id(1), a, 1, T0).unwrap();
    fn found(ledger: &tessera_ledger::Ledger, q: CustomerQuery) -> Vec<u64> {
        ledger
            .search_customers(&q)
            .unwrap()
            .iter()
            .map(|c| c.customer_id)
            .collect()
    }
    let ids = |q: CustomerQuery| found(&ledger, q);
    let by_name = |n: &str| CustomerQuery {
        name: Some(n.into()),
        ..CustomerQuery::default()
    };
    assert_eq!(ids(by_name("АННА")), [a]);
    assert_eq!(ids(by_name("åsa ö")), [b]);
    assert_eq!(
        ids(CustomerQuery {
            city: Some("MALMÖ".into()),
            ..CustomerQuery::default()
        }),
        [b]
    );
    assert_eq!(
        ids(CustomerQuery {
            card: Some(card_id(1)),
            ..CustomerQuery::default()
        }),
        [a]
    );
    assert!(ids(CustomerQuery {
        card: Some(card_id(1)),
        name: Some("åsa".into()),
        city: None,
    })
    .is_empty());
    assert_eq!(ledger.customer_of_card(card_id(1)).unwrap(), Some(a));
    ledger.erase_customer(a).unwrap();
    assert_eq!(ledger.customer_of_card(card_id(1)).unwrap(), None);
    assert!(found(&ledger, by_name("анна")).is_empty());
}

#[test]
fn the_audit_anchor_moves_only_when_the_append_succeeds() {
    let shop = Shop::new();
    let mut ledger = shop.ledger();
    assert_eq!(ledger.audit_anchor().unwrap(), None);
    let first = AuditAnchor {
        entries: 1,
        head: [7; 32],
    };
    ledger
        .advance_audit_anchor(|a| {
            assert_eq!(a, None);
            Ok::<_, LedgerError>(first)
        })
        .unwrap();
    let failed = ledger.advance_audit_anchor(|a| {
        assert_eq!(a, Some(first));
        Err::<AuditAnchor, _>(LedgerError::Malformed("the file could not be written".into()))
    });
    assert!(failed.is_err());
    assert_eq!(ledger.audit_anchor().unwrap(), Some(first));
}
