//! The dashboard's doors, through the office's real routes: nobody reads
//! a page without a staff session; wrong, forged and borrowed credentials
//! are refused; wrong tokens are rate-limited; every answer carries the
//! content security policy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use axum::Router;
use tessera_office::dashboard::auth::{Staff, MAX_FAILURES, SESSION_COOKIE};
use tessera_office::dashboard::CONTENT_SECURITY_POLICY;
use tessera_office::dir::OfficeDir;
use tessera_office::{ServerConfig, Transport};

struct Office {
    dir: tempfile::TempDir,
    router: Router,
    rt: tokio::runtime::Runtime,
}

impl Office {
    fn new(with_token: bool) -> (Office, Option<String>) {
        let dir = tempfile::tempdir().unwrap();
        let office = dir.path().join("office");
        OfficeDir::new(&office).init(&[]).unwrap();
        let token = with_token.then(|| Staff::create(&office, 0).unwrap());
        let (keys, ledger) = OfficeDir::new(&office).open().unwrap();
        let config = ServerConfig {
            office_dir: Some(office),
            request_log: false,
            ..ServerConfig::new(Transport::PlainLoopback)
        };
        let router = tessera_office::server::router(ledger, keys, config).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (Office { dir, router, rt }, token)
    }

    fn send(&self, request: Request<Body>) -> (Response<Body>, String) {
        self.rt.block_on(async {
            let mut router = self.router.clone();
            let response = tower_service::Service::call(&mut router, request).await.unwrap();
            let (parts, body) = response.into_parts();
            let bytes = axum::body::to_bytes(body, 1 << 24).await.unwrap();
            (
                Response::from_parts(parts, Body::empty()),
                String::from_utf8_lossy(&bytes).into_owned(),
            )
        })
    }

    fn get(&self, path: &str, cookie: Option<&str>) -> (Response<Body>, String) {
        let mut r = Request::get(path);
        if let Some(c) = cookie {
            r = r.header(header::COOKIE, c);
        }
        self.send(r.body(Body::empty()).unwrap())
    }

    fn login(&self, token: &str) -> (Response<Body>, String) {
        self.send(
            Request::post("/dashboard/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!("token={token}")))
                .unwrap(),
        )
    }
}

fn header_of<'a>(r: &'a Response<Body>, name: &str) -> &'a str {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn is_login_redirect(r: &Response<Body>) -> bool {
    r.status() == StatusCode::SEE_OTHER && header_of(r, "location") == "/dashboard/login"
}

/// The session cookie (`name=value`) a successful login set.
fn session_of(r: &Response<Body>) -> String {
    let set = header_of(r, "set-cookie");
    set.split(';').next().unwrap().to_owned()
}

#[test]
fn dashboard_pages_need_a_staff_session() {
    let (office, token) = Office::new(true);
    let token = token.unwrap();
    for path in [
        "/dashboard/",
        "/dashboard/index.html",
        "/dashboard/customers.html",
        "/dashboard/customer-c1.html",
        "/dashboard/points.html",
        "/dashboard/no-such-page.html",
    ] {
        let (r, body) = office.get(path, None);
        assert!(is_login_redirect(&r), "{path}: {:?}", r.status());
        assert!(!body.contains("data-figure"), "{path}");
        assert_eq!(header_of(&r, "content-security-policy"), CONTENT_SECURITY_POLICY);
        assert_eq!(header_of(&r, "x-content-type-options"), "nosniff");
    }
    // A forged, expired-looking or foreign cookie opens nothing.
    for cookie in [
        format!(
            "{SESSION_COOKIE}=v1.4000000000.00000000000000000000000000000000.{}",
            "00".repeat(32)
        ),
        format!("{SESSION_COOKIE}=junk"),
        format!("{SESSION_COOKIE}={token}"),
        "other=1".to_owned(),
    ] {
        let (r, _) = office.get("/dashboard/customers.html", Some(&cookie));
        assert!(is_login_redirect(&r), "{cookie}");
    }
    // A terminal's credentials are no staff credentials.
    let (r, _) = office.send(
        Request::get("/dashboard/customers.html")
            .header("Tessera-Batch-Mac", "00".repeat(16))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap(),
    );
    assert!(is_login_redirect(&r));
    // Other methods are refused outright.
    let (r, _) = office.send(Request::post("/dashboard/customers.html").body(Body::empty()).unwrap());
    assert!(r.status().is_client_error(), "{:?}", r.status());

    // The stylesheet and the login page carry no data and are open.
    let (r, css) = office.get("/dashboard/dashboard.css", None);
    assert_eq!(r.status(), StatusCode::OK);
    assert!(css.contains("body{"));
    let (r, login) = office.get("/dashboard/login", None);
    assert_eq!(r.status(), StatusCode::OK);
    assert!(login.contains("name=\"token\"") && !login.contains("<script"));

    // The right token: a session cookie, HttpOnly, Secure, SameSite=Strict.
    let (r, _) = office.login(&token);
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(header_of(&r, "location"), "/dashboard/");
    let set = header_of(&r, "set-cookie");
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/dashboard/", "Max-Age="] {
        assert!(set.contains(flag), "{set}");
    }
    assert!(!set.contains(&token), "the cookie is not the token");
    let session = session_of(&r);
    for page in ["/dashboard/", "/dashboard/customers.html", "/dashboard/points.html"] {
        let (r, body) = office.get(page, Some(&session));
        assert_eq!(r.status(), StatusCode::OK, "{page}");
        assert_eq!(header_of(&r, "content-security-policy"), CONTENT_SECURITY_POLICY);
        assert_eq!(header_of(&r, "cache-control"), "no-store");
        assert!(body.contains("data-figure") || body.contains("No data yet"), "{page}");
    }
    let (r, body) = office.get("/dashboard/index.html", Some(&session));
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        body.contains("data-figure=\"overview.customers\" data-value=\"0\""),
        "{body}"
    );
    let (r, _) = office.get("/dashboard/no-such-page.html", Some(&session));
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (r, _) = office.get("/dashboard/..%2Fissuer-keys.json", Some(&session));
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Logging out clears the cookie; a new token ends the old sessions.
    let (r, _) = office.send(Request::post("/dashboard/logout").body(Body::empty()).unwrap());
    assert!(header_of(&r, "set-cookie").contains("Max-Age=0"));
    Staff::create(&office.dir.path().join("office"), 1).unwrap();
    let (r, _) = office.get("/dashboard/customers.html", Some(&session));
    assert!(is_login_redirect(&r), "the old session ended with its token");
}

#[test]
fn dashboard_wrong_tokens_are_refused_then_rate_limited() {
    let (office, token) = Office::new(true);
    let token = token.unwrap();
    for wrong in ["", "00", &"ab".repeat(32), &token[..63]] {
        let (r, body) = office.login(wrong);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{wrong:?}");
        assert!(header_of(&r, "set-cookie").is_empty());
        assert!(body.contains("Wrong staff token"));
    }
    let (r, _) = office.login("ff");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // MAX_FAILURES wrong tokens: now even the right one waits.
    assert_eq!(MAX_FAILURES, 5);
    let (r, body) = office.login(&token);
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(header_of(&r, "retry-after").parse::<u64>().unwrap() >= 1);
    assert!(header_of(&r, "set-cookie").is_empty());
    assert!(body.contains("Too many wrong tokens"));
}

#[test]
fn dashboard_without_a_staff_token_opens_for_nobody() {
    let (office, _) = Office::new(false);
    let (r, body) = office.login("");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(body.contains("dashboard-token"), "{body}");
    let (r, _) = office.get("/dashboard/", None);
    assert!(is_login_redirect(&r));
}
