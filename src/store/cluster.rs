//! What instances sharing one database coordinate through it: the mail pacer, values
//! created once (the link-signing secret), and which instances are alive.

use super::*;

/// One running instance, as it reports itself ([`Store::heartbeat`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Unique per process start: `host:pid:start:scope`.
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// Where the pid is counted: this boot of this machine's kernel, and the PID
    /// namespace in it, as `inode@boot_id` (the inode `/proc/self/ns/pid` names; the
    /// kernel's `/proc/sys/kernel/random/boot_id`); "" where unknown. Containers sharing
    /// a hostname may each have a process 7, and so may two machines with the same name,
    /// whose first PID namespaces have the same inode.
    pub pid_scope: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
}

impl Instance {
    /// This process, as it reports itself and signs its claims: unique per start, the
    /// same for the whole run.
    pub fn this() -> &'static Instance {
        static THIS: std::sync::OnceLock<Instance> = std::sync::OnceLock::new();
        THIS.get_or_init(|| {
            let host = hostname::get()
                .map_or_else(|_| "unknown".into(), |h| h.to_string_lossy().into_owned());
            let pid_namespace = std::fs::read_link("/proc/self/ns/pid")
                .ok()
                .and_then(|link| {
                    let link = link.to_string_lossy().into_owned();
                    let inode = link.strip_prefix("pid:[")?.strip_suffix(']')?;
                    Some(inode.to_string())
                });
            let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|id| id.trim().to_string())
                .filter(|id| is_boot_id(id));
            let pid_scope = match (pid_namespace, boot) {
                (Some(ns), Some(boot)) => format!("{ns}@{boot}"),
                _ => String::new(),
            };
            let (pid, started_at) = (std::process::id(), Utc::now());
            Instance {
                id: format!("{host}:{pid}:{}:{pid_scope}", started_at.timestamp_millis()),
                host,
                pid,
                pid_scope,
                version: env!("CARGO_PKG_VERSION").to_string(),
                started_at,
            }
        })
    }

    /// Whether the process that signed itself `id` is known to have ended: it ran on
    /// this host, in this boot and PID namespace, and no process has its pid any more,
    /// or only a zombie (a killed `tidings poll` its parent has not reaped). For other
    /// hosts, boots and namespaces, or where they are unknown, nothing is known.
    pub fn is_gone(id: &str) -> bool {
        let Some(signer) = Signer::of(id) else {
            return false;
        };
        let this = Instance::this();
        signer.host == this.host
            && signer
                .pid_scope
                .is_none_or(|scope| !scope.is_empty() && scope == this.pid_scope)
            && pid_has_ended(signer.pid)
    }
}

/// Whether `s` could be a [`Instance::pid_scope`]: "" (unknown), or `inode@boot_id`
/// (digits, hex and `-` around one `@`), never a start time of an older id.
fn is_scope(s: &str) -> bool {
    s.is_empty()
        || s.split_once('@').is_some_and(|(inode, boot)| {
            !inode.is_empty() && inode.bytes().all(|b| b.is_ascii_digit()) && is_boot_id(boot)
        })
}

/// Whether `s` could be a boot id: hex digits and `-`.
fn is_boot_id(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// Whether no process has `pid` (in this PID namespace): `kill(pid, 0)` answers "no such
/// process", or `/proc` shows it a zombie (it has ended; its parent has not yet asked how).
/// A process of another user, or one `/proc` hides (`hidepid`, systemd's
/// `ProtectProc=invisible`), still runs.
fn pid_has_ended(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Err(rustix::io::Errno::SRCH) => true,
        _ => {
            // `pid (comm) S …`: the state follows the last `)` (comm may hold one).
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero()));
            stat.ok().is_some_and(|stat| {
                let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
                state.is_some_and(|rest| rest.starts_with('Z') || rest.starts_with('X'))
            })
        }
    }
}

/// Who an instance id names: `host:pid:start:scope`, or `host:pid:start` as the first
/// Tidings to sign its claims wrote them (no scope: taken as this one's).
pub(crate) struct Signer<'a> {
    pub host: &'a str,
    pub pid: u32,
    pub pid_scope: Option<&'a str>,
}

impl<'a> Signer<'a> {
    pub fn of(id: &'a str) -> Option<Signer<'a>> {
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        let mut parts = id.rsplitn(4, ':');
        let (last, start, pid, host) = (parts.next()?, parts.next()?, parts.next()?, parts.next());
        let (host, pid, pid_scope) = match host {
            // `host:pid:start:scope`: the scope is `inode@boot`, or "" where unknown.
            Some(host) if is_scope(last) && digits(start) && digits(pid) => (host, pid, Some(last)),
            // `host:pid:start`, the host being all of what is before.
            _ => {
                let mut parts = id.rsplitn(3, ':');
                let (_start, pid, host) = (parts.next()?, parts.next()?, parts.next()?);
                (host, pid, None)
            }
        };
        Some(Signer {
            host,
            pid: pid.parse().ok()?,
            pid_scope,
        })
    }
}

/// An instance whose last report is older than this is gone (it reports every 15 s):
/// the claims it holds are taken over.
pub const SILENT_FOR: chrono::Duration = chrono::Duration::seconds(120);

/// Whether the owner of a claim (an instance id) is gone: its process ended on this host
/// ([`Instance::is_gone`]), or it is an instance that stopped reporting (last at
/// `seen_at`, if it ever did: a one-shot command never reports).
pub(crate) fn owner_is_gone(owner: &str, seen_at: Option<i64>, now_s: i64) -> bool {
    if owner == Instance::this().id {
        return false;
    }
    let silent = seen_at.is_some_and(|s| s < now_s - SILENT_FOR.num_seconds());
    silent || Instance::is_gone(owner)
}

/// Of claims held at `now_s` as (owner, its last report, end), those whose owner is not
/// gone: how many, and when the last ends.
pub(crate) fn live_claims(
    claims: Vec<(Option<String>, Option<i64>, i64)>,
    now_s: i64,
) -> (usize, Option<DateTime<Utc>>) {
    let live = claims.into_iter().filter(|(by, seen_at, _)| {
        by.as_deref()
            .is_none_or(|by| !owner_is_gone(by, *seen_at, now_s))
    });
    let (mut count, mut last) = (0, None);
    for (_, _, until) in live {
        count += 1;
        last = last.max(Some(until));
    }
    (count, last.and_then(|s| DateTime::from_timestamp(s, 0)))
}

/// The cluster as the database sees it, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Instances that reported within the last minute.
    pub instances_alive: i64,
    /// Active feeds whose next poll time has come.
    pub feeds_due: i64,
    /// Of those, due for longer than a poll lease: nobody is polling them.
    pub feeds_overdue: i64,
}

/// The connection limits of the whole cluster ([`Store::acquire_fetch_slot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Fetches from one host at once (`poll.per_host`).
    pub per_host: usize,
    /// Fetches at once in all (`poll.concurrency`).
    pub concurrency: usize,
}

/// The connection slots one fetch holds ([`Store::acquire_fetch_slot`]): one of its
/// host's and one of all hosts', under one random token. The host finds them again
/// among the slots of every host ever polled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSlot {
    pub(super) host: String,
    pub(super) token: String,
}

impl FetchSlot {
    /// The holder's token, as stored in `fetch_slots.holder`.
    pub fn token(&self) -> &str {
        &self.token
    }
}

impl Store {
    /// Takes one of `host`'s `per_host` connection slots and one of the `concurrency`
    /// slots of all hosts, for every instance on this database together, until
    /// `now + lease` (a crashed holder's slots free themselves then). `None` when either
    /// is full: wait and ask again. Given back with [`Store::release_fetch_slot`].
    pub async fn acquire_fetch_slot(
        &self,
        host: &str,
        limits: FetchLimits,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Option<FetchSlot>> {
        self.give_back_unreleased().await?;
        let host = host.to_owned();
        run!(self, about = host, db => db.acquire_fetch_slot(&host, limits, now, lease))
    }

    /// Gives back the slots `slot` holds. Slots the database would not give back (it
    /// cannot be written) are given back before this store next takes one or claims
    /// feeds.
    pub async fn release_fetch_slot(&self, slot: &FetchSlot) -> Result<()> {
        let held = slot.clone();
        let result = run!(self, db => db.release_fetch_slot(&held));
        self.keep_unreleased(&result, || Unreleased::Slot(slot.clone()));
        result
    }

    /// Reserves the next slot of the mail pacer every process on this database shares:
    /// one message per `interval` in all (`mail.rate_limit` holds for the cluster).
    /// Returns when this message may go: `now`, or later when others went just before.
    pub async fn reserve_mail_slot(
        &self,
        now: DateTime<Utc>,
        interval: Duration,
    ) -> Result<DateTime<Utc>> {
        run!(self, db => db.reserve_mail_slot(now, interval))
    }

    /// Reserves the next slot of the pacer `pacer` (created on first use), shared like
    /// the mail pacer: one request per `interval` to a destination's host, cluster-wide.
    pub async fn reserve_slot(
        &self,
        pacer: &str,
        now: DateTime<Utc>,
        interval: Duration,
    ) -> Result<DateTime<Utc>> {
        let pacer = pacer.to_owned();
        run!(self, db => db.reserve_slot(&pacer, now, interval))
    }

    /// The value of setting `name`, created as `candidate` by the first instance to ask:
    /// every instance gets the same value (the link-signing secret).
    pub async fn setting_or_insert(&self, name: &str, candidate: &str) -> Result<String> {
        let (name, candidate) = (name.to_owned(), candidate.to_owned());
        run!(self, db => db.setting_or_insert(&name, &candidate))
    }

    /// Records that `instance` is alive at `now`, and forgets instances not seen for a
    /// day.
    pub async fn heartbeat(&self, instance: &Instance, now: DateTime<Utc>) -> Result<()> {
        let instance = instance.clone();
        run!(self, db => db.heartbeat(&instance, now))
    }

    /// Instances alive and feeds due or overdue at `now` (overdue: due for longer than
    /// `lease`).
    pub async fn cluster_stats(&self, now: DateTime<Utc>, lease: Duration) -> Result<ClusterStats> {
        run!(self, db => db.cluster_stats(now, lease))
    }
}

/// The host name the all-hosts slots are kept under (no real host is empty).
pub(super) const ALL_HOSTS: &str = "";

/// A random token for a slot holder: 24 hex digits.
pub(super) fn slot_token() -> Result<String> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A limit as a slot count for SQL (at least one slot).
pub(super) fn slots(limit: usize) -> i64 {
    i64::try_from(limit.max(1)).unwrap_or(i64::MAX)
}

/// An interval in whole milliseconds, at least 1.
pub(super) fn interval_ms(interval: Duration) -> i64 {
    i64::try_from(interval.as_millis())
        .unwrap_or(i64::MAX / 4)
        .max(1)
}

/// The time a stored pacer slot (ms since the epoch) stands for.
pub(super) fn slot_time(ms: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).with_context(|| format!("stored slot {ms} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_id_names_its_host_pid_and_scope_old_ids_too() {
        let claim = |by: &str| FeedClaim {
            by: by.to_string(),
            since: DateTime::UNIX_EPOCH,
            until: DateTime::UNIX_EPOCH,
        };
        let scope = "4026531836@0b3c6f4e-8a52-4f0e-9d3b-2b1f5c7e9a10";
        for (id, host, pid, scope, owner) in [
            (
                format!("web-1:4242:1700:{scope}"),
                "web-1",
                4242,
                Some(scope),
                "web-1 pid 4242",
            ),
            (
                "web-1:4242:1700:".into(),
                "web-1",
                4242,
                Some(""),
                "web-1 pid 4242",
            ),
            (
                "web-1:4242:1700".into(),
                "web-1",
                4242,
                None,
                "web-1 pid 4242",
            ),
            ("a:b:4242:1700".into(), "a:b", 4242, None, "a:b pid 4242"),
            ("db:5:4242:1700".into(), "db:5", 4242, None, "db:5 pid 4242"),
        ] {
            let signer = Signer::of(&id).unwrap();
            assert_eq!(
                (signer.host, signer.pid, signer.pid_scope),
                (host, pid, scope),
                "{id}"
            );
            assert_eq!(claim(&id).owner(), owner);
        }
        assert!(Signer::of("nonsense").is_none());
        assert!(!pid_has_ended(std::process::id()));
        assert!(!pid_has_ended(0), "no pid is not an ended one");
        assert_eq!(claim("nonsense").owner(), "nonsense");
        let this = Instance::this();
        assert_eq!(
            Signer::of(&this.id).map(|s| (s.host, s.pid)),
            Some((this.host.as_str(), std::process::id()))
        );
    }

    /// The scope names this boot: another machine with the same hostname and the same
    /// first PID namespace (its inode is the same everywhere) is another scope, and its
    /// processes' pids say nothing here.
    #[test]
    fn a_process_of_another_boot_is_not_known_to_have_ended() {
        let this = Instance::this();
        let (inode, boot) = this.pid_scope.split_once('@').expect("a scope on Linux");
        assert!(!inode.is_empty() && boot.len() >= 32, "{}", this.pid_scope);
        let mut ended = std::process::Command::new("true").spawn().unwrap();
        let pid = ended.id();
        ended.wait().unwrap();
        let here = format!("{}:{pid}:1:{}", this.host, this.pid_scope);
        assert!(Instance::is_gone(&here));
        let other_boot = format!(
            "{}:{pid}:1:{inode}@00000000-0000-4000-8000-000000000000",
            this.host
        );
        assert!(!Instance::is_gone(&other_boot), "{other_boot}");
        let unknown = format!("{}:{pid}:1:", this.host);
        assert!(
            !Instance::is_gone(&unknown),
            "nothing known without a scope"
        );
    }

    /// A process killed but not yet reaped by its parent (a `tidings poll` under a script
    /// that has not waited for it) is a zombie: it has ended, though `kill(pid, 0)` still
    /// finds it.
    #[test]
    fn a_zombie_has_ended() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(!pid_has_ended(pid), "it runs");
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        // Until it is reaped, its state reads Z once the kernel has ended it.
        let waited = std::time::Instant::now();
        while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap()
            .contains(") Z")
        {
            assert!(waited.elapsed() < std::time::Duration::from_secs(10));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let ended = pid_has_ended(pid);
        child.wait().unwrap();
        assert!(ended, "a zombie has ended");
    }
}
