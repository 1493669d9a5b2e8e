//! The database's guarantees: tokens work once, a crash gives reservations back, writes committed together keep
//! their own outcomes, revocations hold.

use super::*;

const NOW: u64 = 1_800_000_000;
const EK: &str = "sha256:aa";

fn reserve(db: &Db, serial: &str, approval: &Approval) -> Result<(), DbError> {
    let r = Reservation {
        serial: serial.into(),
        ek_hash: EK.into(),
        name: "n1".into(),
        not_before: NOW,
        not_after: NOW + 100,
        approval: approval.clone(),
    };
    db.reserve(r, NOW)
}

#[test]
fn a_token_works_once_and_a_crash_between_reservation_and_issue_gives_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.sqlite");
    let db = Db::open(&path).unwrap();
    let token = db.create_token("n1", Duration::from_secs(3600), NOW).unwrap();
    assert_eq!(db.token(&token, NOW).unwrap().name, "n1");
    assert!(matches!(db.token("nope", NOW), Err(DbError::UnknownToken)));
    assert!(matches!(db.token(&token, NOW + 3600), Err(DbError::ExpiredToken(_))));
    let approval = Approval::Token(token.clone());
    reserve(&db, "01", &approval).unwrap();
    assert!(matches!(db.token(&token, NOW), Err(DbError::SpentToken)));
    assert!(matches!(reserve(&db, "02", &approval), Err(DbError::SpentToken)), "a token works once");
    // The command line opens the database beside the serving daemon: the reservation stays pending.
    let cli = Db::open(&path).unwrap();
    assert_eq!(cli.certificate("01").unwrap().unwrap().state, "pending", "the command line abandoned it");
    drop(cli);
    // The process dies before step 3: at its start, the reservation is abandoned and the token usable again.
    drop(db);
    let db = Db::open(&path).unwrap();
    assert_eq!(db.recover().unwrap(), 1);
    assert_eq!(db.certificate("01").unwrap().unwrap().state, "abandoned");
    assert_eq!(db.token(&token, NOW).unwrap().name, "n1");
    reserve(&db, "03", &approval).unwrap();
    db.issue("03", b"der").unwrap();
    assert_eq!(db.certificate("03").unwrap().unwrap().state, "issued");
    assert!(matches!(reserve(&db, "03", &Approval::Inventory), Err(DbError::SerialTaken(_))), "a serial once");
}

/// Sixteen writes queued while the connection is busy are committed together; the ones a token or a serial
/// refuses undo only themselves, and every outcome is what it would have been alone.
#[test]
fn writes_committed_together_keep_their_own_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.sqlite");
    let db = Db::open(&path).unwrap();
    let token = Approval::Token(db.create_token("n1", Duration::from_secs(3600), NOW).unwrap());
    let outcomes: Vec<(String, Result<(), DbError>)> = std::thread::scope(|s| {
        let busy = db.conn();
        let writers: Vec<_> = (0..16)
            .map(|i| {
                let (db, token) = (&db, &token);
                s.spawn(move || {
                    let serial = format!("{i:02x}");
                    let outcome = match i {
                        0..=3 => reserve(db, &serial, token),
                        4 => db.issue("ff", b"never reserved"),
                        _ => reserve(db, &serial, &Approval::Inventory),
                    };
                    (serial, outcome)
                })
            })
            .collect();
        while common::sync::lock(&db.waiting).len() < 16 {
            std::thread::yield_now();
        }
        drop(busy);
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert!(common::sync::lock(&db.waiting).is_empty());
    let spent: Vec<&str> = outcomes[..4].iter().filter(|(_, o)| o.is_ok()).map(|(s, _)| s.as_str()).collect();
    assert_eq!(spent.len(), 1, "a token works once, in one commit too: {outcomes:?}");
    assert!(outcomes[..4].iter().all(|(_, o)| o.is_ok() || matches!(o, Err(DbError::SpentToken))));
    assert!(matches!(outcomes[4].1, Err(DbError::UnknownSerial(_))), "{:?}", outcomes[4]);
    assert!(outcomes[5..].iter().all(|(_, o)| o.is_ok()), "{outcomes:?}");
    let tokens = db.tokens().unwrap();
    assert_eq!(tokens[0].spent_serial.as_deref(), Some(spent[0]), "spent by the one reservation it made");
    drop(db);
    // What was reported done is durable; what was refused left nothing behind.
    let db = Db::open(&path).unwrap();
    let mut recorded: Vec<String> = db.certificates().unwrap().into_iter().map(|c| c.serial).collect();
    recorded.sort();
    let mut reported: Vec<String> = outcomes.iter().filter(|(_, o)| o.is_ok()).map(|(s, _)| s.clone()).collect();
    reported.sort();
    assert_eq!(recorded, reported);
}

#[test]
fn revocations_cover_serials_and_eks_and_block_renewal_and_re_enrollment() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("ca.sqlite")).unwrap();
    reserve(&db, "0a", &Approval::Inventory).unwrap();
    db.issue("0a", b"x").unwrap();
    reserve(&db, "0b", &Approval::Renewal("0a".into())).unwrap();
    db.issue("0b", b"y").unwrap();
    assert!(matches!(reserve(&db, "0c", &Approval::Renewal("ff".into())), Err(DbError::UnknownSerial(_))));
    // Revoking the older certificate revokes the line, the one renewed from it included.
    assert_eq!(db.revoke_serial("0a", NOW + 1).unwrap(), 2);
    assert!(matches!(db.revoke_serial("ee", NOW), Err(DbError::UnknownSerial(_))));
    for from in ["0a", "0b"] {
        let refused = reserve(&db, "0d", &Approval::Renewal(from.into()));
        assert!(matches!(refused, Err(DbError::RevokedCertificate(_))), "renewal from {from}: {refused:?}");
    }
    let (revoked, mark) = db.revoked().unwrap();
    assert_eq!(revoked, [("0a".to_owned(), NOW + 1), ("0b".to_owned(), NOW + 1)]);
    assert_eq!(db.revoke_ek(EK, NOW + 2).unwrap(), 2);
    let (revoked, later) = db.revoked().unwrap();
    assert_eq!(revoked, [("0a".to_owned(), NOW + 1), ("0b".to_owned(), NOW + 1)]);
    assert!(later > mark, "each revocation moves the mark");
    assert!(db.ek_revoked(EK).unwrap());
    assert!(matches!(reserve(&db, "0e", &Approval::Inventory), Err(DbError::RevokedEk(_))));
    assert_eq!((db.next_crl_number().unwrap(), db.next_crl_number().unwrap()), (1, 2));
}

/// The attack: renew X1 into X2; the operator revokes X2; the node renews from X1 again. Revoking the newest
/// certificate revokes the line it was renewed from, and a renewal pending at that moment is not issued.
#[test]
fn revoking_the_newest_certificate_leaves_no_older_one_to_renew_from() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("ca.sqlite")).unwrap();
    reserve(&db, "01", &Approval::Inventory).unwrap();
    db.issue("01", b"x1").unwrap();
    reserve(&db, "02", &Approval::Renewal("01".into())).unwrap();
    db.issue("02", b"x2").unwrap();
    // A second renewal of 02 is under way (reserved, not yet signed) when 02 is revoked.
    reserve(&db, "03", &Approval::Renewal("02".into())).unwrap();
    assert_eq!(db.revoke_serial("02", NOW + 1).unwrap(), 3);
    let refused = reserve(&db, "04", &Approval::Renewal("01".into()));
    assert!(matches!(refused, Err(DbError::RevokedCertificate(_))), "renewed from the older one: {refused:?}");
    let refused = db.issue("03", b"x3");
    assert!(matches!(refused, Err(DbError::RevokedSince { .. })), "the pending renewal was issued: {refused:?}");
    assert_eq!(db.certificate("03").unwrap().unwrap().state, "pending");
    let (revoked, _) = db.revoked().unwrap();
    assert_eq!(revoked, [("01".to_owned(), NOW + 1), ("02".to_owned(), NOW + 1)]);
}

/// `revoke --ek-hash` committed between a reservation and its issue: the certificate is not delivered, so none
/// reaches a node without being in the next CRL.
#[test]
fn an_ek_revoked_during_an_enrollment_gets_no_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("ca.sqlite")).unwrap();
    reserve(&db, "0a", &Approval::Inventory).unwrap();
    assert_eq!(db.revoke_ek(EK, NOW).unwrap(), 0);
    assert!(matches!(db.issue("0a", b"x"), Err(DbError::RevokedSince { .. })));
    assert_ne!(db.certificate("0a").unwrap().unwrap().state, "issued");
}
