//! Bad input costs the bad row, never the run; a manifest that cannot be read is refused
//! before any request.

use sipgw_bulk::status::Status;

use crate::support::*;

#[test]
fn invalid_rows_are_reported_with_their_line_while_the_rest_apply() {
    let ids = ids(20, 10);
    let sb = Sandbox::seeded(&ids);
    let spare = crate::support::ids(1, 11)[0];
    let bad = [
        // line 22: not a UUID
        "not-a-uuid,x,sip:x.example.com,required,,".to_owned(),
        // line 23: a near-miss codec
        format!("{spare},x,sip:x.example.com,required,,opus"),
        // line 24: an empty list
        format!("{spare},x,sip:x.example.com,required,;,"),
        // line 25: a repeated value
        format!("{spare},x,sip:x.example.com,required,,PCMU;PCMU"),
        // line 26: a second row for the id on line 2
        format!("{},again,,,,", ids[0]),
    ];
    write_csv(&sb.path("m.csv"), &ids, &bad);

    let out = run(sb.cmd().args(["validate", "m.csv"]));
    assert_eq!(code(&out), 1);
    let listing = stdout(&out);
    assert!(
        listing.contains("line 22: id `not-a-uuid` is not a UUID"),
        "{listing}"
    );
    assert!(
        listing.contains("line 23: codecs: unknown codec `opus`: did you mean `OPUS`?"),
        "{listing}"
    );
    assert!(
        listing.contains("line 24: ciphers: the list is empty"),
        "{listing}"
    );
    assert!(
        listing.contains("line 25: codecs: `PCMU` is listed twice"),
        "{listing}"
    );
    assert!(listing.contains("line 26: duplicate id"), "{listing}");
    assert!(listing.contains("line 2 already has it"), "{listing}");
    assert_eq!(sb.state().stats().requests, 0, "validate sends nothing");

    let out = sb.apply("m.csv").report("r.csv").run();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let report = sb.report("r.csv");
    assert_eq!(report.len(), 25);
    for line in 22..=26 {
        assert_eq!(report[&line].status, Status::Invalid, "line {line}");
        assert!(!report[&line].error.is_empty());
    }
    assert!(report[&23].error.contains("did you mean `OPUS`"));
    assert_eq!(
        sb.state().snapshot(),
        expected(&ids),
        "the good rows all applied"
    );
}

#[test]
fn an_unknown_column_or_a_file_that_is_not_a_manifest_exits_65_with_nothing_sent() {
    let ids = ids(3, 12);
    let sb = Sandbox::seeded(&ids);
    sb.write("typo.csv", format!("id,codec\n{},OPUS\n", ids[0]));
    let out = sb.apply("typo.csv").run();
    assert_eq!(code(&out), 65);
    let err = stderr(&out);
    assert!(
        err.contains("unknown column(s) `codec` (did you mean `codecs`?)"),
        "{err}"
    );
    assert!(
        err.contains("known columns: id, name, uri, encryption, ciphers, codecs"),
        "{err}"
    );

    sb.write("notes.yaml", "Dear team,\nplease update the gateways.\n");
    let out = sb.apply("notes.yaml").run();
    assert_eq!(code(&out), 65, "{}", stderr(&out));

    // A YAML syntax error far down the file: still nothing sent for the rows above it.
    let mut yaml = String::new();
    for id in &ids {
        yaml.push_str(&format!("- id: {id}\n  codecs: [OPUS]\n"));
    }
    yaml.push_str("- id: [unclosed\n");
    sb.write("broken.yaml", yaml);
    let out = sb.apply("broken.yaml").run();
    assert_eq!(code(&out), 65, "{}", stderr(&out));

    assert_eq!(sb.state().stats().requests, 0);
}

#[test]
fn a_missing_gateway_is_not_found_and_a_server_422_is_failed_with_its_message() {
    let ids = ids(3, 13);
    let sb = Sandbox::seeded(&ids[..2]);
    sb.write(
        "m.csv",
        format!(
            "id,uri\n{},sip:pbx.example.com\n{},sip:pbx.signalwire.com\n{},sip:gone.example.com\n",
            ids[0], ids[1], ids[2]
        ),
    );
    let out = sb.apply("m.csv").report("r.csv").run();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let report = sb.report("r.csv");
    assert_eq!(report[&2].status, Status::Updated);
    assert_eq!(report[&3].status, Status::Failed);
    assert_eq!(report[&3].http_status, Some(422));
    assert_eq!(
        report[&3].error_code.as_str(),
        "sip_gateway_uri_must_be_external"
    );
    assert!(
        report[&3].error.contains("external SIP entity"),
        "{}",
        report[&3].error
    );
    assert_eq!(report[&4].status, Status::NotFound);
    assert_eq!(report[&4].http_status, Some(404));
    // 4xx are never retried: one GET, one PATCH (and a fresh GET between them where the
    // write slot came later than the first GET's round trip).
    assert!((2..=3).contains(&report[&3].attempts), "{:?}", report[&3]);
    // One PATCH each for the updated row and the refused one: no retry.
    assert_eq!(sb.state().stats().patches, 2);
}
