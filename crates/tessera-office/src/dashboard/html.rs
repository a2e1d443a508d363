//! The dashboard's pages as HTML: one per section, linked to each other
//! by relative links (so the same pages work served and as files).

use std::fmt::Write as _;

use tessera_rules::display::{self, Zone};

use super::svg::{bar_chart, escape, heat_map, line_chart};
use super::DashboardData;

/// The stylesheet every page links (`dashboard.css`, beside the pages).
pub const STYLESHEET: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f3b5a;color:#fff;padding:0.6em 1.2em}
header h1{font-size:1.2em;margin:0}
nav{background:#e8eef5;padding:0.4em 1.2em}
nav a{margin-right:1em;color:#1f3b5a}
nav a[aria-current=page]{font-weight:bold}
main{padding:1em 1.2em}
table{border-collapse:collapse;margin:0.6em 0}
th,td{border-bottom:1px solid #ddd;padding:0.25em 0.6em;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.empty{color:#777;font-style:italic}
.cards{display:flex;flex-wrap:wrap;gap:1em}
.card{background:#fff;border:1px solid #ddd;padding:0.6em 1em;min-width:11em}
.card .v{font-size:1.4em}
svg.chart{background:#fff;border:1px solid #ddd;max-width:100%;height:auto}
form.login{background:#fff;border:1px solid #ddd;padding:1em;max-width:26em}
.error{color:#b53a3a}
footer{color:#777;padding:1em 1.2em;font-size:0.85em}
";

/// The pages' icon (`favicon.svg`, beside the pages).
pub const FAVICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\">\
<title>Tessera</title><rect width=\"16\" height=\"16\" rx=\"3\" fill=\"#1f3b5a\"/>\
<rect x=\"3\" y=\"3\" width=\"4\" height=\"4\" fill=\"#fff\"/><rect x=\"9\" y=\"9\" width=\"4\" height=\"4\" fill=\"#fff\"/></svg>\n";

/// One page of the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Its file name (`index.html`, `customer-c1.html`, …).
    pub name: String,
    /// The whole HTML document.
    pub body: String,
}

const SECTIONS: [(&str, &str); 7] = [
    ("index.html", "Overview"),
    ("customers.html", "Customers"),
    ("segments.html", "Segments"),
    ("cohorts.html", "Cohorts"),
    ("campaigns.html", "Campaigns"),
    ("stores.html", "Stores"),
    ("points.html", "Points economy"),
];

/// Every page of the dashboard for `data`: the sections and one
/// drill-down page per customer.
pub fn pages(data: &DashboardData, zone: &Zone) -> Vec<Page> {
    let mut out: Vec<Page> = SECTIONS.iter().filter_map(|(name, _)| page(data, zone, name)).collect();
    for c in &data.customers {
        out.push(Page {
            name: format!("customer-{}.html", c.key),
            body: customer_page(data, zone, c),
        });
    }
    out
}

/// One page by its file name, `None` for a name that is no page.
pub fn page(data: &DashboardData, zone: &Zone, name: &str) -> Option<Page> {
    let body = match name {
        "index.html" => overview(data, zone),
        "customers.html" => customers(data, zone),
        "segments.html" => segments(data, zone),
        "cohorts.html" => cohorts(data, zone),
        "campaigns.html" => campaigns(data, zone),
        "stores.html" => stores(data, zone),
        "points.html" => points(data, zone),
        _ => {
            let key = name.strip_prefix("customer-")?.strip_suffix(".html")?;
            let c = data.customers.iter().find(|c| c.key == key)?;
            customer_page(data, zone, c)
        }
    };
    Some(Page {
        name: name.to_owned(),
        body,
    })
}

/// The login page (served only; the static export has none).
pub fn login_page(message: Option<&str>) -> String {
    let mut b = String::new();
    b.push_str("<h2>Staff login</h2>");
    if let Some(m) = message {
        let _ = write!(b, "<p class=\"error\" role=\"alert\">{}</p>", escape(m));
    }
    b.push_str(
        "<form class=\"login\" method=\"post\" action=\"login\">\
         <p><label for=\"token\">Staff token (from <code>tessera office dashboard-token</code>)</label></p>\
         <p><input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" size=\"40\" required></p>\
         <p><button type=\"submit\">Log in</button></p></form>",
    );
    document("Login", None, &b, "")
}

fn document(title: &str, current: Option<&str>, body: &str, footer: &str) -> String {
    let mut nav = String::new();
    if current.is_some() {
        nav.push_str("<nav aria-label=\"Sections\">");
        for (name, label) in SECTIONS {
            let here = if Some(name) == current {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(nav, "<a href=\"{name}\"{here}>{label}</a>");
        }
        nav.push_str("</nav>");
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Tessera dashboard</title><link rel=\"stylesheet\" href=\"dashboard.css\">\
         <link rel=\"icon\" type=\"image/svg+xml\" href=\"favicon.svg\"></head>\
         <body><header><h1>Tessera dashboard</h1></header>{nav}<main>{body}</main><footer>{footer}</footer></body></html>\n",
        escape(title)
    )
}

fn footer(data: &DashboardData, zone: &Zone) -> String {
    format!(
        "Figures as of {} ({}), money in {}.",
        escape(&data.as_of),
        escape(zone.name().unwrap_or("local time")),
        escape(&data.currency.code)
    )
}

fn framed(data: &DashboardData, zone: &Zone, name: &str, title: &str, body: &str) -> String {
    document(
        title,
        Some(name),
        &format!("<h2>{}</h2>{body}", escape(title)),
        &footer(data, zone),
    )
}

const NO_DATA: &str = "<p class=\"empty\">No data yet.</p>";

fn money(data: &DashboardData, minor: u64) -> String {
    display::format_money(minor, data.currency.minor_units_per_unit, &data.currency.code)
}

fn signed_money(data: &DashboardData, minor: i64) -> String {
    display::format_signed_money(minor, data.currency.minor_units_per_unit, &data.currency.code)
}

fn count(n: u64) -> String {
    display::group_thousands(n)
}

fn signed(n: i64) -> String {
    let s = display::group_thousands(n.unsigned_abs());
    if n < 0 {
        format!("-{s}")
    } else {
        s
    }
}

/// A table cell that carries its figure: name, machine value and text.
fn figure(name: &str, value: &str, text: &str, numeric: bool) -> String {
    format!(
        "<td{} data-figure=\"{}\" data-value=\"{}\">{}</td>",
        if numeric { " class=\"n\"" } else { "" },
        escape(name),
        escape(value),
        escape(text)
    )
}

fn cell(text: &str) -> String {
    format!("<td>{}</td>", escape(text))
}

fn head(columns: &[&str]) -> String {
    let mut s = String::from("<table><thead><tr>");
    for c in columns {
        let _ = write!(s, "<th scope=\"col\">{}</th>", escape(c));
    }
    s.push_str("</tr></thead><tbody>");
    s
}

fn share(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> (String, String)) -> (String, String) {
    v.map_or_else(|| (String::new(), "—".to_owned()), f)
}

fn overview(data: &DashboardData, zone: &Zone) -> String {
    let o = &data.overview;
    let rows: [(&str, &str, (String, String)); 7] = [
        (
            "customers",
            "Customers",
            opt(o.customers, |n| (n.to_string(), count(n))),
        ),
        (
            "active_customers_90d",
            "Active in the last 90 days",
            opt(o.active_customers_90d, |n| (n.to_string(), count(n))),
        ),
        (
            "purchases",
            "Purchases",
            opt(o.purchases, |n| (n.to_string(), count(n))),
        ),
        (
            "spend_minor",
            "Spend",
            opt(o.spend_minor, |n| (n.to_string(), money(data, n))),
        ),
        (
            "points_outstanding",
            "Points outstanding",
            opt(o.points_outstanding, |n| (n.to_string(), signed(n))),
        ),
        (
            "liability_minor",
            "Liability",
            opt(o.liability_minor, |n| (n.to_string(), signed_money(data, n))),
        ),
        (
            "top_store",
            "Top store",
            opt(o.top_store.as_deref(), |s| (s.to_owned(), s.to_owned())),
        ),
    ];
    let mut b = head(&["figure", "value"]);
    for (key, label, (value, text)) in rows {
        let _ = write!(
            b,
            "<tr><th scope=\"row\">{}</th>{}</tr>",
            escape(label),
            figure(&format!("overview.{key}"), &value, &text, true)
        );
    }
    b.push_str("</tbody></table>");
    if !data.segments.is_empty() {
        let bars: Vec<(String, f64)> = data
            .segments
            .iter()
            .map(|s| (s.label.clone(), s.customers as f64))
            .collect();
        b.push_str(&bar_chart("Customers per segment", &bars, &|v| format!("{v:.0}")));
    }
    framed(data, zone, "index.html", "Overview", &b)
}

fn customers(data: &DashboardData, zone: &Zone) -> String {
    if data.customers.is_empty() {
        return framed(data, zone, "customers.html", "Customers", NO_DATA);
    }
    let mut b = head(&[
        "customer",
        "segment",
        "visits",
        "spend",
        "expected visits (90 d)",
        "lifetime value",
        "favourite store",
        "favourite category",
        "household",
    ]);
    for c in &data.customers {
        let k = |f: &str| format!("customers.{}.{f}", c.key);
        let name = c
            .name
            .clone()
            .or_else(|| c.customer_id.map(|id| format!("customer {id}")))
            .unwrap_or_else(|| format!("anonymous {}", c.key));
        let (ev, evt) = opt(c.expected_visits_90d, |v| (v.to_string(), format!("{v:.2}")));
        let (clv, clvt) = opt(c.clv_minor, |v| (v.to_string(), signed_money(data, v)));
        let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".into());
        let _ = write!(
            b,
            "<tr><td><a href=\"customer-{}.html\">{}</a></td>{}{}{}{}{}{}{}{}</tr>",
            escape(&c.key),
            escape(&name),
            figure(
                &k("segment"),
                c.segment.as_deref().unwrap_or(""),
                &text(&c.segment),
                false
            ),
            figure(&k("visits"), &c.visits.to_string(), &count(c.visits), true),
            figure(
                &k("spend_minor"),
                &c.spend_minor.to_string(),
                &money(data, c.spend_minor),
                true
            ),
            figure(&k("expected_visits_90d"), &ev, &evt, true),
            figure(&k("clv_minor"), &clv, &clvt, true),
            figure(
                &k("favourite_store"),
                c.favourite_store.as_deref().unwrap_or(""),
                &text(&c.favourite_store),
                false
            ),
            cell(&text(&c.favourite_category)),
            cell(&text(&c.household)),
        );
    }
    b.push_str("</tbody></table>");
    framed(data, zone, "customers.html", "Customers", &b)
}

/// The drill-down page of customer `c` (its transactions as given), with
/// the other figures of `data`.
pub fn customer_page_of(data: &DashboardData, zone: &Zone, c: &super::CustomerSummary) -> Page {
    Page {
        name: format!("customer-{}.html", c.key),
        body: customer_page(data, zone, c),
    }
}

fn customer_page(data: &DashboardData, zone: &Zone, c: &super::CustomerSummary) -> String {
    let title = c
        .name
        .clone()
        .or_else(|| c.customer_id.map(|id| format!("Customer {id}")))
        .unwrap_or_else(|| format!("Anonymous card {}", c.key));
    let k = |f: &str| format!("customer.{f}");
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".into());
    let mut b = String::from("<p><a href=\"customers.html\">← all customers</a></p>");
    b.push_str(&head(&["figure", "value"]));
    let (ev, evt) = opt(c.expected_visits_90d, |v| (v.to_string(), format!("{v:.2}")));
    let (clv, clvt) = opt(c.clv_minor, |v| (v.to_string(), signed_money(data, v)));
    let rows = [
        (
            "Customer id",
            figure(
                &k("customer_id"),
                &c.customer_id.map(|i| i.to_string()).unwrap_or_default(),
                &c.customer_id.map_or_else(|| "—".into(), |i| i.to_string()),
                true,
            ),
        ),
        (
            "Segment",
            figure(
                &k("segment"),
                c.segment.as_deref().unwrap_or(""),
                &text(&c.segment),
                false,
            ),
        ),
        (
            "Visits",
            figure(&k("visits"), &c.visits.to_string(), &count(c.visits), true),
        ),
        (
            "Spend",
            figure(
                &k("spend_minor"),
                &c.spend_minor.to_string(),
                &money(data, c.spend_minor),
                true,
            ),
        ),
        (
            "Expected visits in 90 days",
            figure(&k("expected_visits_90d"), &ev, &evt, true),
        ),
        ("Lifetime value", figure(&k("clv_minor"), &clv, &clvt, true)),
        (
            "Favourite store",
            figure(
                &k("favourite_store"),
                c.favourite_store.as_deref().unwrap_or(""),
                &text(&c.favourite_store),
                false,
            ),
        ),
        ("Favourite category", cell(&text(&c.favourite_category))),
        ("Household", cell(&text(&c.household))),
    ];
    for (label, td) in rows {
        let _ = write!(b, "<tr><th scope=\"row\">{}</th>{td}</tr>", escape(label));
    }
    b.push_str("</tbody></table><h3>Transactions</h3>");
    if c.transactions.is_empty() {
        b.push_str(NO_DATA);
    } else {
        b.push_str(&head(&["date", "store", "type", "amount", "points", "categories"]));
        for t in &c.transactions {
            let _ = write!(
                b,
                "<tr>{}{}{}<td class=\"n\">{}</td><td class=\"n\">{}</td>{}</tr>",
                cell(&t.date_local),
                cell(t.store.as_deref().unwrap_or("—")),
                cell(&t.tx_type),
                t.amount_minor.map_or_else(|| "—".into(), |a| escape(&money(data, a))),
                escape(&signed(t.points)),
                cell(&t.categories.join(", ")),
            );
        }
        b.push_str("</tbody></table>");
    }
    document(
        &title,
        Some("customers.html"),
        &format!("<h2>{}</h2>{b}", escape(&title)),
        &footer(data, zone),
    )
}

fn segments(data: &DashboardData, zone: &Zone) -> String {
    if data.segments.is_empty() {
        return framed(data, zone, "segments.html", "Segments", NO_DATA);
    }
    let mut b = head(&["segment", "customers", "spend", "rule", "meaning"]);
    for s in &data.segments {
        let k = |f: &str| format!("segments.{}.{f}", s.name);
        let _ = write!(
            b,
            "<tr><th scope=\"row\">{}</th>{}{}{}{}</tr>",
            escape(&s.label),
            figure(&k("customers"), &s.customers.to_string(), &count(s.customers), true),
            figure(
                &k("spend_minor"),
                &s.spend_minor.to_string(),
                &money(data, s.spend_minor),
                true
            ),
            cell(&s.rule),
            cell(&s.meaning),
        );
    }
    b.push_str("</tbody></table>");
    let bars: Vec<(String, f64)> = data
        .segments
        .iter()
        .map(|s| (s.label.clone(), s.spend_minor as f64))
        .collect();
    let per_unit = data.currency.minor_units_per_unit.max(1) as f64;
    b.push_str(&bar_chart(
        &format!("Spend per segment ({})", data.currency.code),
        &bars,
        &|v| format!("{:.0}", v / per_unit),
    ));
    framed(data, zone, "segments.html", "Segments", &b)
}

fn cohorts(data: &DashboardData, zone: &Zone) -> String {
    if data.cohorts.is_empty() {
        return framed(data, zone, "cohorts.html", "Cohorts", NO_DATA);
    }
    let rows: Vec<(String, Vec<f64>)> = data
        .cohorts
        .iter()
        .map(|c| (c.cohort.clone(), c.retention.clone()))
        .collect();
    let mut b = heat_map("Retention by first-visit month", &rows, &|m| format!("M{m}"));
    let months = data.cohorts.iter().map(|c| c.retention.len()).max().unwrap_or(0);
    let mut cols = vec!["cohort".to_owned(), "size".to_owned()];
    cols.extend((0..months).map(|m| format!("M{m}")));
    b.push_str(&head(&cols.iter().map(String::as_str).collect::<Vec<_>>()));
    for c in &data.cohorts {
        let _ = write!(
            b,
            "<tr><th scope=\"row\">{}</th>{}",
            escape(&c.cohort),
            figure(
                &format!("cohorts.{}.size", c.cohort),
                &c.size.to_string(),
                &count(c.size),
                true
            )
        );
        for (m, r) in c.retention.iter().enumerate() {
            b.push_str(&figure(
                &format!("cohorts.{}.retention.{m}", c.cohort),
                &r.to_string(),
                &share(*r),
                true,
            ));
        }
        b.push_str("</tr>");
    }
    b.push_str("</tbody></table>");
    framed(data, zone, "cohorts.html", "Cohorts", &b)
}

fn campaigns(data: &DashboardData, zone: &Zone) -> String {
    if data.campaigns.is_empty() {
        return framed(data, zone, "campaigns.html", "Campaigns", NO_DATA);
    }
    let mut b = head(&[
        "campaign",
        "treated",
        "control",
        "visits treated",
        "visits control",
        "visit uplift (95% CI)",
        "spend uplift (95% CI)",
    ]);
    for c in &data.campaigns {
        let k = |f: &str| format!("campaigns.{}.{f}", c.id);
        let _ = write!(
            b,
            "<tr><th scope=\"row\">{} <small>({})</small></th>{}{}{}{}{}{}</tr>",
            escape(&c.name),
            escape(&c.id),
            figure(&k("treated"), &c.treated.to_string(), &count(c.treated), true),
            figure(&k("control"), &c.control.to_string(), &count(c.control), true),
            figure(
                &k("visits_treated"),
                &c.visits_treated.to_string(),
                &format!("{:.2}", c.visits_treated),
                true
            ),
            figure(
                &k("visits_control"),
                &c.visits_control.to_string(),
                &format!("{:.2}", c.visits_control),
                true
            ),
            figure(
                &k("visits_uplift"),
                &c.visits_uplift.to_string(),
                &format!(
                    "{:+.2} ({:+.2} … {:+.2})",
                    c.visits_uplift, c.visits_ci_low, c.visits_ci_high
                ),
                true
            ),
            figure(
                &k("spend_uplift_minor"),
                &c.spend_uplift_minor.to_string(),
                &format!(
                    "{} ({} … {})",
                    signed_money(data, c.spend_uplift_minor),
                    signed_money(data, c.spend_ci_low_minor),
                    signed_money(data, c.spend_ci_high_minor)
                ),
                true
            ),
        );
    }
    b.push_str("</tbody></table>");
    let bars: Vec<(String, f64)> = data
        .campaigns
        .iter()
        .map(|c| (c.id.clone(), c.visits_uplift.max(0.0)))
        .collect();
    b.push_str(&bar_chart("Visit uplift per customer", &bars, &|v| format!("{v:.2}")));
    framed(data, zone, "campaigns.html", "Campaigns", &b)
}

fn periods<'a>(all: impl Iterator<Item = &'a String>) -> Vec<String> {
    let set: std::collections::BTreeSet<&String> = all.collect();
    set.into_iter().cloned().collect()
}

fn stores(data: &DashboardData, zone: &Zone) -> String {
    let mut b = String::from("<h3>Stores</h3>");
    let per_unit = data.currency.minor_units_per_unit.max(1) as f64;
    if data.stores.is_empty() {
        b.push_str(NO_DATA);
    } else {
        let xs = periods(data.stores.iter().map(|s| &s.period));
        let names = periods(data.stores.iter().map(|s| &s.store));
        let series: Vec<(String, Vec<f64>)> = names
            .iter()
            .map(|n| {
                let v = xs
                    .iter()
                    .map(|p| {
                        data.stores
                            .iter()
                            .filter(|s| &s.store == n && &s.period == p)
                            .map(|s| s.spend_minor as f64)
                            .sum()
                    })
                    .collect();
                (n.clone(), v)
            })
            .collect();
        b.push_str(&line_chart(
            &format!("Spend per store and month ({})", data.currency.code),
            &xs,
            &series,
            &|v| format!("{:.0}", v / per_unit),
        ));
        b.push_str(&head(&["period", "store", "purchases", "customers", "spend"]));
        for s in &data.stores {
            let k = |f: &str| format!("stores.{}.{}.{f}", s.period, s.store);
            let _ = write!(
                b,
                "<tr>{}{}{}{}{}</tr>",
                cell(&s.period),
                cell(&s.store),
                figure(&k("purchases"), &s.purchases.to_string(), &count(s.purchases), true),
                figure(&k("customers"), &s.customers.to_string(), &count(s.customers), true),
                figure(
                    &k("spend_minor"),
                    &s.spend_minor.to_string(),
                    &money(data, s.spend_minor),
                    true
                ),
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("<h3>Categories</h3>");
    if data.categories.is_empty() {
        b.push_str(NO_DATA);
    } else {
        let mut totals: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
        for c in &data.categories {
            *totals.entry(&c.category).or_default() += c.spend_minor;
        }
        let bars: Vec<(String, f64)> = totals.iter().map(|(k, v)| ((*k).to_owned(), *v as f64)).collect();
        b.push_str(&bar_chart(
            &format!("Spend per category ({})", data.currency.code),
            &bars,
            &|v| format!("{:.0}", v / per_unit),
        ));
        b.push_str(&head(&["period", "category", "purchases", "spend"]));
        for c in &data.categories {
            let k = |f: &str| format!("categories.{}.{}.{f}", c.period, c.category);
            let _ = write!(
                b,
                "<tr>{}{}{}{}</tr>",
                cell(&c.period),
                cell(&c.category),
                figure(&k("purchases"), &c.purchases.to_string(), &count(c.purchases), true),
                figure(
                    &k("spend_minor"),
                    &c.spend_minor.to_string(),
                    &money(data, c.spend_minor),
                    true
                ),
            );
        }
        b.push_str("</tbody></table>");
    }
    framed(data, zone, "stores.html", "Stores and categories", &b)
}

fn points(data: &DashboardData, zone: &Zone) -> String {
    let o = &data.overview;
    let mut b = head(&["figure", "value"]);
    let (v, t) = opt(o.points_outstanding, |n| (n.to_string(), signed(n)));
    let (lv, lt) = opt(o.liability_minor, |n| (n.to_string(), signed_money(data, n)));
    let _ = write!(
        b,
        "<tr><th scope=\"row\">Points outstanding</th>{}</tr><tr><th scope=\"row\">Liability</th>{}</tr></tbody></table>",
        figure("overview.points_outstanding", &v, &t, true),
        figure("overview.liability_minor", &lv, &lt, true)
    );
    b.push_str("<h3>By month</h3>");
    if data.points.is_empty() {
        b.push_str(NO_DATA);
    } else {
        let xs: Vec<String> = data.points.iter().map(|p| p.period.clone()).collect();
        let series = vec![
            (
                "issued".to_owned(),
                data.points.iter().map(|p| p.issued as f64).collect(),
            ),
            (
                "redeemed".to_owned(),
                data.points.iter().map(|p| p.redeemed as f64).collect(),
            ),
            (
                "outstanding".to_owned(),
                data.points.iter().map(|p| p.outstanding as f64).collect(),
            ),
        ];
        b.push_str(&line_chart("Points per month", &xs, &series, &|v| format!("{v:.0}")));
        b.push_str(&head(&[
            "period",
            "issued",
            "redeemed",
            "outstanding",
            "redemption rate",
        ]));
        for p in &data.points {
            let k = |f: &str| format!("points.{}.{f}", p.period);
            let (r, rt) = opt(p.redemption_rate, |r| (r.to_string(), share(r)));
            let _ = write!(
                b,
                "<tr>{}{}{}{}{}</tr>",
                cell(&p.period),
                figure(&k("issued"), &p.issued.to_string(), &signed(p.issued), true),
                figure(&k("redeemed"), &p.redeemed.to_string(), &signed(p.redeemed), true),
                figure(
                    &k("outstanding"),
                    &p.outstanding.to_string(),
                    &signed(p.outstanding),
                    true
                ),
                figure(&k("redemption_rate"), &r, &rt, true),
            );
        }
        b.push_str("</tbody></table>");
    }
    framed(data, zone, "points.html", "Points economy", &b)
}
