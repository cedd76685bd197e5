//! The Kubernetes examples as docs/kubernetes.md describes them: the shard count is one
//! number in each (the kustomization copies it; a copy edited by hand is caught here), and
//! the CronJob's command, run as its pod runs it, refuses a shard the count does not have,
//! and a same-day run under another count.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::*;

fn example(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/k8s")
        .join(name);
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The Job spec of a Job or of a CronJob's template.
fn job_spec(doc: &Value) -> &Value {
    match doc["kind"].as_str() {
        Some("CronJob") => &doc["spec"]["jobTemplate"]["spec"],
        _ => &doc["spec"],
    }
}

fn container(doc: &Value) -> &Value {
    &job_spec(doc)["template"]["spec"]["containers"][0]
}

/// The value of the container's environment variable `name`, if it sets one.
fn env_of<'a>(doc: &'a Value, name: &str) -> Option<&'a str> {
    container(doc)["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

/// The shard count of an Indexed Job: `completions`, with `parallelism`, `SIPGW_SHARDS`
/// and the N of the command's `--shard K/N` all equal to it; else what disagrees.
fn shard_count(doc: &Value) -> Result<u64, String> {
    let spec = job_spec(doc);
    let completions = spec["completions"].as_u64().ok_or("no completions")?;
    let parallelism = spec["parallelism"].as_u64().ok_or("no parallelism")?;
    if parallelism != completions {
        return Err(format!(
            "parallelism {parallelism} against completions {completions}"
        ));
    }
    let shards = env_of(doc, "SIPGW_SHARDS").ok_or("no SIPGW_SHARDS")?;
    if shards != completions.to_string() {
        return Err(format!(
            "SIPGW_SHARDS {shards:?} against completions {completions}"
        ));
    }
    let command = serde_json::to_string(&container(doc)["args"]).unwrap_or_default();
    let uses_it = ["${SIPGW_SHARDS}", "$(SIPGW_SHARDS)"].iter().any(|n| {
        command.contains(&format!("JOB_COMPLETION_INDEX)/{n}"))
            || command.contains(&format!("JOB_COMPLETION_INDEX}}/{n}"))
    });
    if !uses_it {
        return Err(format!(
            "the command's --shard is not K/$SIPGW_SHARDS: {command}"
        ));
    }
    Ok(completions)
}

#[test]
fn each_kubernetes_example_writes_its_shard_count_as_one_number() {
    for name in ["cronjob.yaml", "indexed-job.yaml"] {
        assert_eq!(shard_count(&example(name)), Ok(4), "{name}");
    }
    // `kubectl apply -k` copies the CronJob's completions into the other two.
    let kustomization = example("kustomization.yaml");
    let replacement = &kustomization["replacements"][0];
    assert_eq!(
        replacement["source"]["fieldPath"],
        "spec.jobTemplate.spec.completions"
    );
    let targets = &replacement["targets"][0]["fieldPaths"];
    assert_eq!(
        targets,
        &serde_json::json!([
            "spec.jobTemplate.spec.parallelism",
            "spec.jobTemplate.spec.template.spec.containers.[name=sipgw-bulk].env.[name=SIPGW_SHARDS].value"
        ])
    );
    let resources = &kustomization["resources"];
    assert_eq!(
        resources,
        &serde_json::json!(["cronjob.yaml", "reports-pvc.yaml"])
    );
}

#[test]
fn a_shard_count_edited_in_one_place_of_three_is_caught() {
    let shipped = example("cronjob.yaml");
    let mut edited = shipped.clone();
    edited["spec"]["jobTemplate"]["spec"]["parallelism"] = 3.into();
    assert!(shard_count(&edited).unwrap_err().contains("parallelism 3"));

    let mut edited = shipped.clone();
    edited["spec"]["jobTemplate"]["spec"]["completions"] = 3.into();
    edited["spec"]["jobTemplate"]["spec"]["parallelism"] = 3.into();
    let error = shard_count(&edited).unwrap_err();
    assert!(error.contains("SIPGW_SHARDS \"4\""), "{error}");

    let mut edited = shipped;
    let args =
        &mut edited["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][0];
    *args = args
        .as_str()
        .unwrap()
        .replace("${SIPGW_SHARDS}", "4")
        .into();
    assert!(shard_count(&edited).unwrap_err().contains("--shard"));
}

/// The CronJob's pod on this machine: its container arguments as `/bin/sh -c` runs them,
/// with the volumes' paths, the binary and the Pushgateway moved here, its environment the
/// Secret's credentials, the container's `env` and the index Kubernetes sets.
pub struct CronJobPod {
    pub args: String,
    pub env: Vec<(String, String)>,
    pub manifests: PathBuf,
    pub volume: PathBuf,
}

impl CronJobPod {
    pub fn new(sb: &Sandbox) -> CronJobPod {
        let manifests = sb.path("manifests");
        let volume = sb.path("reports");
        std::fs::create_dir_all(&manifests).unwrap();
        std::fs::create_dir_all(&volume).unwrap();
        let doc = example("cronjob.yaml");
        let container = container(&doc);
        assert_eq!(container["command"], serde_json::json!(["/bin/sh", "-c"]));
        let shipped = container["args"][0].as_str().unwrap();
        let moved = [
            ("exec sipgw-bulk ", format!("exec {BIN} ")),
            ("/manifests/", format!("{}/", manifests.display())),
            ("/reports/", format!("{}/", volume.display())),
            (
                "http://pushgateway.monitoring.svc:9091",
                // Nobody listens there: a push that fails is a warning, never a failed run.
                "http://127.0.0.1:9".to_owned(),
            ),
        ];
        let mut args = shipped.to_owned();
        for (from, to) in &moved {
            assert!(
                args.contains(from),
                "the CronJob's args have no {from:?}: {shipped}"
            );
            args = args.replace(from, to);
        }
        let credentials = sb.cmd();
        let mut env: Vec<(String, String)> = credentials
            .get_envs()
            .filter_map(|(k, v)| {
                Some((
                    k.to_string_lossy().into_owned(),
                    v?.to_string_lossy().into_owned(),
                ))
            })
            .collect();
        for e in container["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap().to_owned();
            env.push((name, e["value"].as_str().unwrap().to_owned()));
        }
        CronJobPod {
            args,
            env,
            manifests,
            volume,
        }
    }

    /// Runs the pod of index `index`, with `changes` made to its environment.
    pub fn run(&self, sb: &Sandbox, index: u32, changes: &[(&str, &str)]) -> Output {
        let mut sh = Command::new("/bin/sh");
        sh.arg("-c")
            .arg(&self.args)
            .current_dir(sb.dir.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("JOB_COMPLETION_INDEX", index.to_string())
            .envs(changes.iter().copied());
        run(&mut sh)
    }
}

/// More pods than the count: the pod past it is refused before any request (exit 64,
/// which the pod failure policy turns into a failed Job). A count changed the same day:
/// the next run of a report made under the old count is refused too.
#[test]
fn the_cronjob_s_pod_refuses_a_shard_the_count_does_not_have() {
    let ids = ids(12, 904);
    let sb = Sandbox::seeded(&ids);
    let pod = CronJobPod::new(&sb);
    write_csv(&pod.manifests.join("gateways.csv"), &ids, &[]);

    let past = pod.run(&sb, 4, &[]);
    assert_eq!(code(&past), 64, "{}", stderr(&past));
    assert!(stderr(&past).contains("shard `4/4`"), "{}", stderr(&past));
    assert_eq!(sb.state().stats().requests, 0, "nothing sent");

    let first = pod.run(&sb, 0, &[]);
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    let sent = sb.state().stats().requests;
    let recount = pod.run(&sb, 0, &[("SIPGW_SHARDS", "3")]);
    assert_eq!(code(&recount), 64, "{}", stderr(&recount));
    assert!(stderr(&recount).contains("shard"), "{}", stderr(&recount));
    assert_eq!(sb.state().stats().requests, sent, "nothing sent");
}

/// A run's metrics say its shard count, which the shard alerts compare across a schedule.
#[test]
fn a_run_s_metrics_carry_its_shard_count() {
    let ids = ids(6, 905);
    let sb = Sandbox::with_manifest(&ids);
    let out = sb
        .plan("m.csv")
        .args(["-q", "--shard", "1/3", "--metrics-file", "m.prom"])
        .run();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = sb.read("m.prom");
    let line = text
        .lines()
        .find(|l| l.starts_with("sipgw_bulk_shards{"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("shard=\"1/3\""), "{line}");
    assert!(line.ends_with(" 3"), "{line}");
}
