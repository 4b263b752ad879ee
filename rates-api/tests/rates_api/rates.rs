//! `GET /rates` against the real data, every expected value computed independently in SQL.

use crate::common::{assert_day, expected_totals, ports_under, spawn_app};
use serde_json::Value;

fn codes(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn the_worked_example_cnggz_to_eetll_on_2021_01_05() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(format!(
            "{}/rates?date_from=2021-01-05&date_to=2021-01-05&orig_code=CNGGZ&dest_code=EETLL",
            app.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.text().await.unwrap();
    assert_eq!(
        text,
        r#"{"rates":[{"count":3,"day":"2021-01-05","price":1154.0}]}"#
    );
    app.stop().await;
}

#[tokio::test]
async fn a_full_month_matches_an_independent_sql_computation_exactly() {
    let app = spawn_app().await;
    let got = app
        .rates("2021-01-01", "2021-01-31", "CNGGZ", "EETLL")
        .await;
    let expected = expected_totals(
        &app.db.admin,
        "2021-01-01",
        "2021-01-31",
        &codes(&["CNGGZ"]),
        &codes(&["EETLL"]),
    )
    .await;
    assert_eq!(got.len(), 31);
    assert_eq!(expected.len(), 31);
    for (g, e) in got.iter().zip(&expected) {
        assert_day(&app.db.admin, g, e).await;
    }
    // And PostgreSQL's own avg(), converted to a double, agrees within one ulp.
    let pg: Vec<(String, f64)> = app
        .db
        .admin
        .query(
            "SELECT day::text, avg(price)::float8 FROM prices
             WHERE orig_code = 'CNGGZ' AND dest_code = 'EETLL'
               AND day BETWEEN '2021-01-01' AND '2021-01-31'
             GROUP BY day ORDER BY day DESC",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        pg.len(),
        31,
        "every day of the month has prices for this pair"
    );
    for (g, (day, avg)) in got.iter().zip(&pg) {
        assert_eq!(g["day"], day.as_str());
        let price = g["price"].as_f64().unwrap();
        assert!(
            price == *avg || price == avg.next_up() || price == avg.next_down(),
            "{day}: {price} vs avg {avg}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn days_without_prices_and_days_with_one_or_two_prices() {
    let app = spawn_app().await;
    let admin = &app.db.admin;
    // A pair and a day with exactly n prices, for n = 1 and 2.
    for n in [1_i64, 2] {
        let row = admin
            .query_one(
                "SELECT orig_code, dest_code, day::text FROM prices
                 GROUP BY orig_code, dest_code, day HAVING count(*) = $1
                 ORDER BY 1, 2, 3 LIMIT 1",
                &[&n],
            )
            .await
            .unwrap();
        let (orig, dest, day): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let got = app.rates(&day, &day, &orig, &dest).await;
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0]["count"].as_i64(),
            Some(n),
            "{orig}->{dest} {day}: {:?}",
            got[0]
        );
        assert!(got[0]["price"].is_null(), "{:?}", got[0]);
    }
    // A pair with prices in January but none on some January day.
    let row = admin
        .query_one(
            "SELECT o, d, g::date::text
             FROM (SELECT DISTINCT orig_code o, dest_code d FROM prices) pairs
             CROSS JOIN generate_series('2021-01-01'::date, '2021-01-31', '1 day') g
             WHERE NOT EXISTS (SELECT 1 FROM prices p
                               WHERE p.orig_code = o AND p.dest_code = d AND p.day = g::date)
             ORDER BY 1, 2, 3 LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let (orig, dest, day): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    let got = app.rates("2021-01-01", "2021-01-31", &orig, &dest).await;
    let entry = got.iter().find(|r| r["day"] == day.as_str()).unwrap();
    assert!(
        entry["count"].is_null() && entry["price"].is_null(),
        "{entry}"
    );
    // The whole month of that pair, mixed days, against SQL.
    let expected = expected_totals(admin, "2021-01-01", "2021-01-31", &[orig], &[dest]).await;
    for (g, e) in got.iter().zip(&expected) {
        assert_day(admin, g, e).await;
    }
    // Outside the data (December 2020) every day is empty but present.
    let december = app
        .rates("2020-12-30", "2021-01-01", "CNGGZ", "EETLL")
        .await;
    let days: Vec<&str> = december
        .iter()
        .map(|r| r["day"].as_str().unwrap())
        .collect();
    assert_eq!(days, ["2021-01-01", "2020-12-31", "2020-12-30"]);
    assert!(december[1]["count"].is_null() && december[2]["price"].is_null());
    assert_eq!(december[0]["count"], 3);
    app.stop().await;
}

#[tokio::test]
async fn a_reversed_range_is_an_empty_list() {
    let app = spawn_app().await;
    let (status, body) = app
        .get("/rates?date_from=2021-01-31&date_to=2021-01-01&orig_code=CNGGZ&dest_code=EETLL")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({"rates": []}));
    app.stop().await;
}

#[tokio::test]
async fn unknown_codes_give_every_day_with_nulls() {
    let app = spawn_app().await;
    // Unknown on either side, a lower-case port code (codes are case-sensitive), and a
    // string that needs URL encoding.
    for (orig, dest) in [
        ("XXXXX", "EETLL"),
        ("CNGGZ", "XXXXX"),
        ("cnggz", "EETLL"),
        ("CNGGZ", "eetll"),
        ("no%20such%20place", "EETLL"),
    ] {
        let got = app.rates("2021-01-01", "2021-01-10", orig, dest).await;
        assert_eq!(got.len(), 10, "{orig}->{dest}");
        for day in &got {
            assert!(
                day["count"].is_null() && day["price"].is_null(),
                "{orig}->{dest}: {day}"
            );
        }
        assert_eq!(got[0]["day"], "2021-01-10");
    }
    app.stop().await;
}

#[tokio::test]
async fn every_bad_input_is_a_400_with_a_json_error() {
    let app = spawn_app().await;
    let ok = [
        ("date_from", "2021-01-01"),
        ("date_to", "2021-01-31"),
        ("orig_code", "CNGGZ"),
        ("dest_code", "EETLL"),
    ];
    let query = |skip: &str, replace: Option<(&str, &str)>| -> String {
        let mut parts = Vec::new();
        for (k, v) in ok {
            if k == skip {
                continue;
            }
            let v = match replace {
                Some((rk, rv)) if rk == k => rv,
                _ => v,
            };
            parts.push(format!("{k}={v}"));
        }
        format!("/rates?{}", parts.join("&"))
    };
    let mut cases: Vec<(String, &str)> = Vec::new();
    for (param, _) in ok {
        cases.push((query(param, None), param));
    }
    for bad_date in ["2021-02-30", "yesterday", "2021-13-01", "2021-1-5", ""] {
        cases.push((query("", Some(("date_from", bad_date))), "date_from"));
        cases.push((query("", Some(("date_to", bad_date))), "date_to"));
    }
    cases.push((query("", Some(("orig_code", ""))), "orig_code"));
    cases.push((query("", Some(("dest_code", ""))), "dest_code"));
    // 2021-01-01 to 2024-01-02 is 1097 days, one more than the default maximum.
    cases.push((query("", Some(("date_to", "2024-01-02"))), "range"));
    cases.push((
        query("", Some(("date_from", "0001-01-01"))).replace("2021-01-31", "9999-12-31"),
        "range",
    ));
    cases.push(("/rates".into(), "date_from"));

    for (url, mentions) in &cases {
        let response = app
            .http
            .get(format!("{}{url}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{url}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{url}"
        );
        let body: Value = response.json().await.unwrap();
        let error = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{url}: {body}"));
        assert!(error.contains(mentions), "{url}: {error}");
    }

    // The maximum itself is allowed: 2021-01-01 to 2024-01-01 is 1096 days.
    let got = app
        .rates("2021-01-01", "2024-01-01", "CNGGZ", "EETLL")
        .await;
    assert_eq!(got.len(), 1096);
    assert_eq!(got[0]["day"], "2024-01-01");
    assert_eq!(got[1095]["day"], "2021-01-01");
    app.stop().await;
}

#[tokio::test]
async fn a_region_slug_covers_every_port_of_the_region() {
    let app = spawn_app().await;
    let admin = &app.db.admin;
    // kattegat has ports and no sub-regions.
    let kattegat = ports_under(admin, "kattegat").await;
    assert!(kattegat.len() > 1, "{kattegat:?}");
    let got = app
        .rates("2021-01-01", "2021-01-31", "CNSGH", "kattegat")
        .await;
    let expected = expected_totals(
        admin,
        "2021-01-01",
        "2021-01-31",
        &codes(&["CNSGH"]),
        &kattegat,
    )
    .await;
    assert!(
        expected.iter().any(|(_, n, _)| *n > 3),
        "the test needs days with prices from several ports"
    );
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_day(admin, g, e).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn nested_regions_cover_ports_at_every_depth() {
    let app = spawn_app().await;
    let admin = &app.db.admin;
    let northern_europe = ports_under(admin, "northern_europe").await;
    let scandinavia = ports_under(admin, "scandinavia").await;
    let kattegat = ports_under(admin, "kattegat").await;
    let uk_sub = ports_under(admin, "uk_sub").await;
    // The tree is really nested: kattegat < scandinavia < northern_europe, and uk_sub sits
    // two levels below northern_europe (via north_europe_sub).
    assert!(kattegat.iter().all(|p| scandinavia.contains(p)));
    assert!(scandinavia.len() > kattegat.len());
    assert!(scandinavia.iter().all(|p| northern_europe.contains(p)));
    assert!(!uk_sub.is_empty() && uk_sub.iter().all(|p| northern_europe.contains(p)));
    let direct: i64 = admin
        .query_one(
            "SELECT count(*) FROM ports WHERE parent_slug = 'northern_europe'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(northern_europe.len() as i64 > direct);

    let china = ports_under(admin, "china_main").await;
    let cases: [(&str, &str, &[String], &[String]); 4] = [
        ("china_main", "northern_europe", &china, &northern_europe),
        ("china_main", "scandinavia", &china, &scandinavia),
        (
            "CNGGZ",
            "northern_europe",
            &codes(&["CNGGZ"]),
            &northern_europe,
        ),
        ("china_main", "EETLL", &china, &codes(&["EETLL"])),
    ];
    for (orig, dest, origs, dests) in cases {
        let got = app.rates("2021-01-01", "2021-01-07", orig, dest).await;
        let expected = expected_totals(admin, "2021-01-01", "2021-01-07", origs, dests).await;
        assert!(expected.iter().all(|(_, n, _)| *n >= 3), "{orig}->{dest}");
        assert_eq!(got.len(), 7);
        for (g, e) in got.iter().zip(&expected) {
            assert_day(admin, g, e).await;
        }
    }
    // A region is wider than one of its ports: the answers differ.
    let region = app
        .rates("2021-01-05", "2021-01-05", "china_main", "EETLL")
        .await;
    let port = app
        .rates("2021-01-05", "2021-01-05", "CNGGZ", "EETLL")
        .await;
    assert!(region[0]["count"].as_i64() > port[0]["count"].as_i64());
    app.stop().await;
}

#[tokio::test]
async fn the_rates_query_is_served_by_the_lookup_index() {
    let app = spawn_app().await;
    let admin = &app.db.admin;
    admin
        .batch_execute(&format!(
            "PREPARE rates(date, date, text, text) AS {}",
            rates_api::db::RATES_SQL
        ))
        .await
        .unwrap();
    // Both the plans PostgreSQL may pick for a prepared statement.
    for mode in ["force_custom_plan", "force_generic_plan"] {
        admin
            .batch_execute(&format!("SET plan_cache_mode = {mode}"))
            .await
            .unwrap();
        let plan: Vec<String> = admin
            .query(
                "EXPLAIN EXECUTE rates('2021-01-01', '2021-01-31', 'CNGGZ', 'EETLL')",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("prices_orig_dest_day_idx"), "{mode}:\n{plan}");
        assert!(!plan.contains("Seq Scan on prices"), "{mode}:\n{plan}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_port_code_never_expands_even_when_a_region_has_that_slug() {
    let app = spawn_app().await;
    let admin = &app.db.admin;
    // This cluster is throwaway: make a region named like the port CNGGZ, holding another
    // Chinese port that has prices to EETLL.
    admin
        .batch_execute(
            "INSERT INTO regions (slug, name, parent_slug) VALUES ('CNGGZ', 'Collision', NULL);
             UPDATE ports SET parent_slug = 'CNGGZ' WHERE code = 'CNSGH';",
        )
        .await
        .unwrap();
    let got = app
        .rates("2021-01-05", "2021-01-05", "CNGGZ", "EETLL")
        .await;
    assert_eq!(got[0]["count"], 3, "the port code expanded: {:?}", got[0]);
    // The region walk itself works for that slug when it is not a port code.
    admin
        .batch_execute(
            "INSERT INTO regions (slug, name, parent_slug) VALUES ('collision', 'C', NULL);
             UPDATE ports SET parent_slug = 'collision' WHERE code = 'CNSGH';",
        )
        .await
        .unwrap();
    let region = app
        .rates("2021-01-05", "2021-01-05", "collision", "EETLL")
        .await;
    let expected = expected_totals(
        admin,
        "2021-01-05",
        "2021-01-05",
        &codes(&["CNSGH"]),
        &codes(&["EETLL"]),
    )
    .await;
    assert!(expected[0].1 > 0, "CNSGH has prices to EETLL that day");
    assert_day(admin, &region[0], &expected[0]).await;
    app.stop().await;
}
