//! Many machines, one space: `--shard K/N` processes, each with its own adaptive write
//! pace, share the space's write limit the way TCP flows share a link.

use sipgw_bulk::report::Status;
use sipgw_bulk::sandbox::SandboxConfig;

use crate::support::*;

#[test]
fn three_shards_each_at_the_whole_limit_converge_under_it_and_finish_every_row() {
    // The space takes 200 writes a second from everyone. Three shards each run at
    // --rate 200: together they would offer 600/s without the adaptive pace.
    const LIMIT: u64 = 200;
    let ids = ids(1800, 130);
    let config = SandboxConfig {
        write_limit: LIMIT as u32,
        ..SandboxConfig::default()
    };
    let sb = Sandbox::start(config, &ids);
    write_csv(&sb.path("m.csv"), &ids, &[]);
    let shards: Vec<Guarded> = (0..3)
        .map(|k| {
            sb.cmd()
                .args(["apply", "m.csv", "--yes", "-q", "--read-mode", "get"])
                .args(["--shard", &format!("{k}/3"), "--rate", "200"])
                .args(["--report", &format!("r{k}.csv")])
                .spawn_guarded()
        })
        .collect();
    for shard in shards {
        let out = shard.wait_with_output();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }

    // Every row right, each gateway written once.
    assert_eq!(sb.state().snapshot(), expected(&ids));
    let mut rows = 0;
    for k in 0..3 {
        let report = report(&sb.path(&format!("r{k}.csv")));
        assert!(report.values().all(|r| r.status == Status::Updated));
        rows += report.len();
    }
    assert_eq!(rows, ids.len());
    for id in &ids {
        assert_eq!(sb.state().patch_count(id), 1);
    }

    let stats = sb.state().stats();
    let seconds: Vec<(u64, u64)> = stats
        .accepted_per_second
        .iter()
        .zip(&stats.throttled_per_second)
        .map(|(a, t)| (*a, *t))
        .skip_while(|(a, t)| a + t == 0)
        .collect();
    eprintln!("per second (accepted, 429): {seconds:?}");
    // A small share of the writes refused: without the pace, two in three would be.
    assert!(
        stats.writes_throttled * 100 <= stats.writes * 12,
        "{} of {} writes answered 429",
        stats.writes_throttled,
        stats.writes
    );
    // Converged: once the first cuts are made (the first 3 seconds), the shards together
    // offer about what the space takes, and 429s are rare.
    let later: Vec<&(u64, u64)> = seconds.iter().skip(3).collect();
    assert!(later.len() >= 3, "{seconds:?}");
    let later_429: u64 = later.iter().map(|s| s.1).sum();
    let later_all: u64 = later.iter().map(|s| s.0 + s.1).sum();
    assert!(later_429 * 100 <= later_all * 5, "{seconds:?}");
    for (accepted, throttled) in &later {
        assert!(accepted + throttled <= LIMIT * 13 / 10, "{seconds:?}");
    }
}
