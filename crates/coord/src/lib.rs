//! A fleet's shared pacing, budgets and answers for one VirusTotal key, kept in Redis.
//!
//! Several vtbulk processes on several hosts that use one key must, together, stay inside the
//! key's rate and its hourly, daily and monthly allowances. Each asks Redis for every request
//! it sends: one Lua script ([`GRANT`]) runs atomically on the server, reads the time from
//! Redis itself (`TIME`: the hosts' clocks are not trusted, and need not agree), and either
//! grants the next slot (the shared theoretical arrival time moves one interval on: GCRA
//! with no burst), or says how long to wait for it, or says which calendar window is spent
//! and when it resets. At low rates a grant is a *turn*: the fleet's next slot is one interval
//! after the holder's request actually left ([`DEPARTED`]), so late departures never shorten
//! the spacing. At high rates (an interval under [`LEASE_BELOW`]) a round trip per request would
//! cost more than the interval, so a process *leases* several consecutive slots in one grant
//! and spends them on its own clock; what it does not use in time goes back ([`RETURN`]): the
//! counters are refunded, and the fleet's next slot moves back when nobody was granted since.
//! A grant charges the hour, day and month counters of the UTC windows
//! it falls in (expiring a window after its end); the month is the calendar month, computed
//! in the script from the day number. Keys are named by the API key's fingerprint
//! (`vtbulk:<fingerprint>:pace`, `...:spent:day:<day number>`): the key itself never reaches
//! this crate. Single-instance Redis: the script builds its window keys from the time it reads,
//! which Redis Cluster does not allow.
//!
//! Redis is reached with the `redis` crate (redis-rs: the most used Rust client, maintained,
//! with a tokio multiplexed connection and script caching by SHA, `EVALSHA` falling back to
//! `EVAL`).

use std::time::Duration;

/// Waits until `deadline`: tokio's timer up to a millisecond and a half before, then a spin (a
/// timer fires up to a tick late, and every late departure delays the fleet's next slot).
async fn wait_precisely(deadline: tokio::time::Instant) {
    let spin = Duration::from_micros(1500);
    if let Some(wake) = deadline.checked_sub(spin)
        && wake > tokio::time::Instant::now()
    {
        tokio::time::sleep_until(wake).await;
    }
    while tokio::time::Instant::now() < deadline {
        std::hint::spin_loop();
    }
}

fn micros(d: Duration) -> i64 {
    d.as_micros().min(i64::MAX as u128) as i64
}

/// The scripts' calendar: civil dates from day numbers since 1970-01-01 and back (Howard
/// Hinnant's algorithms), since Redis's Lua has no date library.
macro_rules! calendar {
    () => {
        r#"
local function civil(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m
end
local function days_from_civil(y, m)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5)
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end
"#
    };
}

/// The grant script. `KEYS[1]`: the key's prefix. ARGV: the interval in microseconds; the hour,
/// day and month allowances for this fleet (`-1`: none); the spend known in those windows
/// (VirusTotal's `used` when this process started: a window's counter starts there the first
/// time the fleet touches it); a token and a lease in milliseconds (`0`: no turn); `1` to
/// charge the windows (`0`: a request no window counts, `GET /users`, paced all the same); the
/// lookahead in microseconds; how many consecutive slots (a lease: no turn); a gap in
/// microseconds left after the last of them (the requester's round trip: its clock reads the
/// slots up to that late). Answers `{1, now_us, delay_us, seq, slots, next_us}` (granted at
/// Redis's `now_us`, the first slot `delay_us` later; with a token, the turn is held until
/// [`DEPARTED`] or the lease ends; `slots` may be fewer than asked when a window has fewer
/// left; `next_us` is the fleet's next slot, which names the lease for [`RETURN`]),
/// `{0, wait_us}` (the slot or the turn is not free yet), or `{2, window, resets_at}` (window 0
/// hour, 1 day, 2 month, spent; Unix seconds of its reset).
pub const GRANT: &str = concat!(
    calendar!(),
    r#"
local prefix = KEYS[1]
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = sec * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local pace = prefix .. ':pace'
local turn = prefix .. ':turn'
local lease = tonumber(ARGV[9])
local tat = tonumber(redis.call('GET', pace) or '0')
-- A turn is granted up to `lookahead` before its slot: the holder waits out the rest on its
-- own clock, precisely, instead of asking again after a timer that wakes late.
local lookahead = tonumber(ARGV[11])
local want = tonumber(ARGV[12])
local gap = tonumber(ARGV[13])
if (lease > 0 or want > 1) and redis.call('EXISTS', turn) == 1 then
  -- Held: the next slot is no sooner than the one the holder's grant set; ask again then.
  return {0, math.max(tat - now - lookahead, 200), 0}
end
if tat > now + lookahead then
  return {0, tat - now - lookahead, 0}
end
local delay = math.max(tat - now, 0)
local hour = math.floor(sec / 3600)
local day = math.floor(sec / 86400)
local y, m = civil(day)
local ny, nm = y, m + 1
if nm > 12 then ny, nm = y + 1, 1 end
local windows = {
  {prefix .. ':spent:hour:' .. hour, tonumber(ARGV[2]), (hour + 1) * 3600},
  {prefix .. ':spent:day:' .. day, tonumber(ARGV[3]), (day + 1) * 86400},
  {prefix .. ':spent:month:' .. (y * 12 + m - 1), tonumber(ARGV[4]), days_from_civil(ny, nm) * 86400},
}
local n = want
for i, w in ipairs(windows) do
  if ARGV[10] == '0' then break end
  redis.call('SET', w[1], ARGV[4 + i], 'NX', 'EXAT', w[3] + 86400)
  local used = tonumber(redis.call('GET', w[1]) or '0')
  if w[2] >= 0 then
    if used >= w[2] then
      return {2, i - 1, w[3]}
    end
    n = math.min(n, w[2] - used)
  end
end
for _, w in ipairs(windows) do
  if ARGV[10] == '0' then break end
  redis.call('INCRBY', w[1], n)
  redis.call('EXPIREAT', w[1], w[3] + 86400)
end
local next = math.max(tat, now) + n * interval + gap
redis.call('SET', pace, string.format('%.0f', next), 'PX', math.floor(interval / 1000) + 60000)
local seq = 0
if lease > 0 then
  redis.call('SET', turn, ARGV[8], 'PX', lease)
  seq = redis.call('INCR', prefix .. ':seq')
end
return {1, now, delay, seq, n, next}
"#
);

/// The departure script. `KEYS[1]`: the prefix; ARGV: the token, the interval, the turn's slot
/// (Redis's clock) and how late after it the request left (all in microseconds). The turn's
/// holder says its request left: the next slot is one interval after that departure on
/// Redis's clock, never before (the lateness the holder reports includes the whole round trip
/// of its grant, of which only the way back delayed it: the spacing errs long by half a round
/// trip, never short), and the turn is free. A token that no longer holds the turn (its lease
/// ran out) changes nothing.
pub const DEPARTED: &str = r#"
local prefix = KEYS[1]
local turn = prefix .. ':turn'
if redis.call('GET', turn) ~= ARGV[1] then
  return 0
end
local interval = tonumber(ARGV[2])
local next = tonumber(ARGV[3]) + tonumber(ARGV[4]) + interval
redis.call('SET', prefix .. ':pace', string.format('%.0f', next), 'PX', math.floor(interval / 1000) + 60000)
redis.call('DEL', turn)
return 1
"#;

/// The push script. `KEYS[1]`: the prefix; ARGV: a turn's sequence number, microseconds. The
/// answer to that turn's request came back late (the server handled it late: a strict
/// limiter stamps it late), so the fleet's next slot moves back by that much, unless another
/// turn was granted since (then it is too late to help).
pub const PUSH: &str = r#"
local prefix = KEYS[1]
if redis.call('GET', prefix .. ':seq') ~= ARGV[1] then
  return 0
end
local pace = prefix .. ':pace'
local tat = tonumber(redis.call('GET', pace) or '0')
redis.call('SET', pace, string.format('%.0f', tat + tonumber(ARGV[2])), 'KEEPTTL')
return 1
"#;

/// The return script. `KEYS[1]`: the prefix; ARGV: the fleet's next slot the lease's grant set
/// (its name), the lease's unused slots after the last it used, all its unused slots, the
/// interval in microseconds, and the Unix second of the grant (its windows; empty: now). Every unused slot
/// is refunded to the windows it was charged to; the trailing ones also go back to the fleet's
/// pace when no grant came since (never to before now).
pub const RETURN: &str = concat!(
    calendar!(),
    r#"
local prefix = KEYS[1]
local tail = tonumber(ARGV[2])
local unused = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pace = prefix .. ':pace'
local moved = 0
if tail > 0 and redis.call('GET', pace) == ARGV[1] then
  local back = tonumber(ARGV[1]) - tail * tonumber(ARGV[4])
  redis.call('SET', pace, string.format('%.0f', math.max(back, now)), 'KEEPTTL')
  moved = 1
end
local sec = ARGV[5] == '' and tonumber(t[1]) or tonumber(ARGV[5])
local hour = math.floor(sec / 3600)
local day = math.floor(sec / 86400)
local y, m = civil(day)
for _, k in ipairs({prefix .. ':spent:hour:' .. hour, prefix .. ':spent:day:' .. day,
                    prefix .. ':spent:month:' .. (y * 12 + m - 1)}) do
  local used = tonumber(redis.call('GET', k) or '0')
  if used > 0 then
    redis.call('DECRBY', k, math.min(used, unused))
  end
end
return moved
"#
);

/// The claim script. KEYS: the answer key and the claim key of one IOC; ARGV: the owner, a
/// lease in milliseconds, and the prefix of the owners' liveness keys. The answer if there is
/// one (`{1, answer}`), else the claim if it is free or its holder is dead (no liveness key:
/// killed, it stopped saying it is alive) (`{2}`), else `{0}`: one step, so that an answer
/// published between a look and a claim cannot make two processes pay for one lookup.
const CLAIM: &str = r#"
local answer = redis.call('GET', KEYS[1])
if answer then
  return {1, answer}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then
  return {2, ''}
end
local holder = redis.call('GET', KEYS[2])
if holder and redis.call('EXISTS', ARGV[3] .. holder) == 0 then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', tonumber(ARGV[2]))
  return {2, ''}
end
return {0, ''}
"#;

/// How long a process counts as alive after it last said so ([`Coordinator::heartbeat`]).
pub const ALIVE: Duration = Duration::from_secs(5);

/// What the fleet's answers and claims are about: a file by one of its digests (hex), a URL,
/// domain or IP address by its canonical text. Named `file:<hex>`, `url:<url>`,
/// `domain:<name>`, `ip:<address>` under the key's prefix in Redis.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A file, by the digest asked for (lower-case hex).
    File(String),
    /// A URL, by its canonical text.
    Url(String),
    /// A domain.
    Domain(String),
    /// An IP address.
    Ip(String),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, id) = match self {
            Subject::File(hex) => ("file", hex),
            Subject::Url(url) => ("url", url),
            Subject::Domain(name) => ("domain", name),
            Subject::Ip(address) => ("ip", address),
        };
        write!(f, "{kind}:{id}")
    }
}

/// What the fleet has for an IOC (see [`Coordinator::answer_or_claim`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Another process's answer.
    Answer(Vec<u8>),
    /// Nobody had it: this process claimed its lookup.
    Claimed,
    /// Another process is looking it up now.
    Busy,
}

/// The spent script: `KEYS[1]` the prefix; answers the hour, day and month counters now.
const SPENT: &str = concat!(
    calendar!(),
    r#"
local prefix = KEYS[1]
local sec = tonumber(redis.call('TIME')[1])
local hour = math.floor(sec / 3600)
local day = math.floor(sec / 86400)
local y, m = civil(day)
local get = function(k) return tonumber(redis.call('GET', k) or '0') end
return {get(prefix .. ':spent:hour:' .. hour), get(prefix .. ':spent:day:' .. day),
        get(prefix .. ':spent:month:' .. (y * 12 + m - 1))}
"#
);

/// For tests: `ARGV[1]` a day number; answers its year, month, and the day number of the first
/// of the next month, by the scripts' own calendar.
pub const CALENDAR_CHECK: &str = concat!(
    calendar!(),
    r#"
local y, m = civil(tonumber(ARGV[1]))
local ny, nm = y, m + 1
if nm > 12 then ny, nm = y + 1, 1 end
return {y, m, days_from_civil(ny, nm)}
"#
);

/// Why the coordinator cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// The URL is not a Redis URL.
    #[error("bad coordinator URL: {0}")]
    Url(String),
    /// Redis cannot be reached (connection refused, timed out, authentication failed).
    #[error("the coordinator (Redis) cannot be reached: {0}")]
    Unreachable(String),
    /// Redis answered something unexpected.
    #[error("the coordinator (Redis) failed: {0}")]
    Redis(String),
}

/// A calendar window of the key's budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// The UTC hour.
    Hour,
    /// The UTC day.
    Day,
    /// The UTC calendar month.
    Month,
}

/// What the fleet may spend per window (`None`: no limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allowances {
    /// Per UTC hour.
    pub hour: Option<u64>,
    /// Per UTC day.
    pub day: Option<u64>,
    /// Per UTC calendar month.
    pub month: Option<u64>,
}

/// What the fleet had spent, by VirusTotal's account, when this process read it: each window's
/// counter in Redis starts from it the first time the fleet touches that window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seeds {
    /// Spent this UTC hour.
    pub hour: u64,
    /// Spent this UTC day.
    pub day: u64,
    /// Spent this UTC month.
    pub month: u64,
}

/// A held turn: until [`Coordinator::departed`] (or its lease ends) no other process of the
/// fleet is granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Turn {
    token: String,
    /// The slot, on Redis's clock (Unix microseconds).
    slot_us: i64,
    /// The fleet's count of turns when this one was granted.
    seq: i64,
    /// The slot on this process's clock (when the grant's answer arrived, plus its delay).
    deadline: tokio::time::Instant,
    /// The grant's round trip: an upper bound on how late the answer made the deadline.
    rtt: Duration,
}

impl Turn {
    /// When the turn's slot comes on this process's clock.
    pub fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    /// The fleet's count of turns when this one was granted (for [`Coordinator::push`]).
    pub fn seq(&self) -> i64 {
        self.seq
    }
}

/// A live process of the fleet, as its heartbeat says.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// Its host name.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When it started, Unix seconds.
    pub started: i64,
    /// Its last heartbeat, Unix seconds (its own clock: for showing only).
    pub seen: i64,
    /// Requests it sent so far.
    pub requests: u64,
    /// Requests it sent in the last minute.
    pub last_minute: u64,
    /// Slots it holds in its lease now (at high rates; 0 with a turn per request).
    #[serde(default)]
    pub leased: u64,
}

/// The coordinator's answer to one request for a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Granted, at this moment of Redis's clock (Unix microseconds).
    Granted {
        /// Redis's `TIME` when it granted.
        at_us: i64,
        /// How long after that its slot comes (a turn is granted a little early).
        delay: Duration,
        /// The fleet's count of turns (0 when no turn was asked for).
        seq: i64,
        /// How many consecutive slots (1 but for a lease).
        slots: u32,
        /// The fleet's next slot after them (Redis's clock): the lease's name for [`RETURN`].
        next_us: i64,
    },
    /// The next slot is this far away.
    Wait(Duration),
    /// A window is spent until `resets_at` (Unix seconds).
    Exhausted {
        /// Which.
        window: Window,
        /// When it resets.
        resets_at: i64,
    },
}

/// What the fleet spent in the current windows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Spent {
    /// This UTC hour.
    pub hour: u64,
    /// This UTC day.
    pub day: u64,
    /// This UTC month.
    pub month: u64,
}

/// One process's handle on the fleet's shared state for one key.
#[derive(Clone)]
pub struct Coordinator {
    con: redis::aio::ConnectionManager,
    prefix: String,
    grant: redis::Script,
    departed: redis::Script,
    push: redis::Script,
    claim: redis::Script,
    spent: redis::Script,
    /// Tokens of this process's turns: its id and a counter.
    owner: String,
    next: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The slots this process leased and has not spent (at high rates).
    lease: std::sync::Arc<tokio::sync::Mutex<Leases>>,
    /// How many of them are left, for the heartbeat.
    leased: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The last grant's round trip, in microseconds: the gap a lease leaves after its slots.
    rtt_us: std::sync::Arc<std::sync::atomic::AtomicU64>,
    returns: redis::Script,
}

/// How one grant is asked for.
#[derive(Clone, Copy)]
struct Ask<'a> {
    /// A turn's token: the turn is held until the request leaves.
    token: Option<&'a str>,
    /// Charge the windows (`GET /users` is paced but not charged).
    charge: bool,
    /// Consecutive slots: more than one is a lease.
    slots: u32,
    /// Left free after the last slot.
    gap: Duration,
}

impl Default for Ask<'_> {
    fn default() -> Self {
        Ask {
            token: None,
            charge: true,
            slots: 1,
            gap: Duration::ZERO,
        }
    }
}

/// Below this interval (above 6,000/min) a process leases slots instead of taking a turn per
/// request: a turn costs two round trips to Redis and the fleet's whole cycle through them,
/// most of an interval this short.
pub const LEASE_BELOW: Duration = Duration::from_millis(10);

/// A lease spans about this long: each lease ends with a little free time (its slack and a
/// round trip), so longer leases lose less of the rate.
pub const LEASE_SPAN: Duration = Duration::from_millis(50);

/// The most slots one lease holds.
pub const LEASE_MAX: u32 = 64;

/// How many slots a process leases at a time at `interval`: 1 (a turn per request) from
/// [`LEASE_BELOW`] up, else enough to span [`LEASE_SPAN`] (50 at 60,000/min).
pub fn lease_size(interval: Duration) -> u32 {
    if interval.is_zero() || interval >= LEASE_BELOW {
        return 1;
    }
    (LEASE_SPAN.as_nanos().div_ceil(interval.as_nanos())).clamp(2, u128::from(LEASE_MAX)) as u32
}

/// This process's lease, and when its last slot's request left.
#[derive(Debug, Default)]
struct Leases {
    current: Option<Lease>,
    /// When the last slot's request left (this process's clock): the next is an interval
    /// after it, if that is still close enough to its slot.
    last_departure: Option<tokio::time::Instant>,
}

/// One leased slot, held until its request leaves ([`Slot::departed`]) or it is dropped:
/// meanwhile no other request of this process takes a slot, so each is spaced from the last
/// one's actual departure, not only from its slot.
#[derive(Debug)]
pub struct Slot {
    leases: tokio::sync::OwnedMutexGuard<Leases>,
    at: tokio::time::Instant,
}

impl Slot {
    /// When the slot came (this process's clock).
    pub fn at(&self) -> tokio::time::Instant {
        self.at
    }

    /// Its request left at `at`: the next slot is spaced from then.
    pub fn departed(mut self, at: tokio::time::Instant) {
        self.leases.last_departure = Some(at);
    }
}

/// Consecutive slots leased by this process, spent in order on its own clock.
#[derive(Debug)]
struct Lease {
    /// The next slot on this process's clock (the grant's answer plus its delay: never early).
    next: tokio::time::Instant,
    /// Slots not handed out yet.
    left: u32,
    /// Slots that passed unused (more than an interval late): refunded at the end.
    skipped: u32,
    /// The fleet's next slot after the lease, as the grant set it (its name).
    name_us: i64,
    /// The grant's Unix second on Redis's clock (the windows it charged).
    sec: i64,
    interval: Duration,
    /// How late after its slot a request may leave (spaced from the last departure): the
    /// lease leaves this much more after its last slot.
    slack: Duration,
}

/// How late after its slot a leased request may leave (a busy host's late departure, absorbed
/// instead of crowding the next request): a quarter of the interval, at most this; the lease
/// leaves that much free after its last slot, so the next process's first slot keeps the
/// spacing.
const SLACK: Duration = Duration::from_micros(500);

/// How early a turn may be granted before its slot; the holder waits out the rest itself.
pub const LOOKAHEAD: Duration = Duration::from_millis(5);

/// How long a turn is held at most: a holder killed between its grant and its departure
/// blocks the fleet this long.
pub const LEASE: Duration = Duration::from_secs(2);

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// Connects to `endpoint` (`redis://[:password@]host:port/db`, `rediss://` for TLS) for
    /// the key whose fingerprint is `fingerprint`, within `timeout`.
    pub async fn connect(
        endpoint: &Endpoint,
        fingerprint: &str,
        timeout: Duration,
    ) -> Result<Coordinator, CoordError> {
        let client = redis::Client::open(endpoint.connection_info()?)
            .map_err(|e| CoordError::Url(endpoint.scrub(e.to_string())))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(3);
        let con = tokio::time::timeout(
            timeout,
            redis::aio::ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| CoordError::Unreachable(format!("no connection within {timeout:?}")))?
        .map_err(|e| CoordError::Unreachable(endpoint.scrub(e.to_string())))?;
        // Redis accepts a connection before it asks for the password: one command now, so a
        // missing or wrong one stops the run at the start, not at its first grant.
        let mut probe = con.clone();
        tokio::time::timeout(timeout, redis::cmd("PING").query_async::<()>(&mut probe))
            .await
            .map_err(|_| CoordError::Unreachable(format!("no answer within {timeout:?}")))?
            .map_err(|e| CoordError::Unreachable(endpoint.scrub(e.to_string())))?;
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Ok(Coordinator {
            con,
            prefix: format!("vtbulk:{fingerprint}"),
            grant: redis::Script::new(GRANT),
            departed: redis::Script::new(DEPARTED),
            push: redis::Script::new(PUSH),
            claim: redis::Script::new(CLAIM),
            spent: redis::Script::new(SPENT),
            owner: format!("{}-{nonce:x}", std::process::id()),
            next: Default::default(),
            lease: Default::default(),
            leased: Default::default(),
            rtt_us: Default::default(),
            returns: redis::Script::new(RETURN),
        })
    }

    /// The prefix of every key this key's fleet uses in Redis.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Asks once for the next slot, spaced `interval` from the fleet's last grant, within
    /// `allow` (no turn is held: the next slot is one interval from this grant).
    pub async fn grant(&self, interval: Duration, allow: Allowances) -> Result<Answer, CoordError> {
        self.ask(interval, allow, Seeds::default(), Ask::default())
            .await
    }

    async fn ask(
        &self,
        interval: Duration,
        allow: Allowances,
        seeds: Seeds,
        how: Ask<'_>,
    ) -> Result<Answer, CoordError> {
        let Ask {
            token,
            charge,
            slots,
            gap,
        } = how;
        let limit = |v: Option<u64>| v.map_or(-1, |n| n.min(i64::MAX as u64) as i64);
        let mut con = self.con.clone();
        let answer: Vec<i64> = self
            .grant
            .key(&self.prefix)
            .arg(micros(interval))
            .arg(limit(allow.hour))
            .arg(limit(allow.day))
            .arg(limit(allow.month))
            .arg(seeds.hour)
            .arg(seeds.day)
            .arg(seeds.month)
            .arg(token.unwrap_or(""))
            .arg(if token.is_some() {
                LEASE.as_millis() as i64
            } else {
                0
            })
            .arg(i64::from(charge))
            .arg(if token.is_some() || slots > 1 {
                micros(LOOKAHEAD)
            } else {
                0
            })
            .arg(slots.max(1))
            .arg(micros(gap))
            .invoke_async(&mut con)
            .await
            .map_err(|e| CoordError::Redis(e.to_string()))?;
        let at = |i: usize| answer.get(i).copied().unwrap_or(0);
        let (code, value, extra) = (at(0), at(1), at(2));
        Ok(match code {
            1 => Answer::Granted {
                at_us: value,
                delay: Duration::from_micros(extra.max(0) as u64),
                seq: at(3),
                slots: at(4).clamp(1, i64::from(u32::MAX)) as u32,
                next_us: at(5),
            },
            0 => Answer::Wait(Duration::from_micros(value.max(0) as u64)),
            _ => Answer::Exhausted {
                window: match value {
                    0 => Window::Hour,
                    1 => Window::Day,
                    _ => Window::Month,
                },
                resets_at: extra,
            },
        })
    }

    /// Waits for a slot (asking again when told to wait): the Redis time it was granted at,
    /// or the spent window.
    pub async fn acquire(
        &self,
        interval: Duration,
        allow: Allowances,
    ) -> Result<Result<i64, (Window, i64)>, CoordError> {
        loop {
            match self.grant(interval, allow).await? {
                Answer::Granted { at_us, .. } => return Ok(Ok(at_us)),
                Answer::Wait(d) => tokio::time::sleep(d).await,
                Answer::Exhausted { window, resets_at } => return Ok(Err((window, resets_at))),
            }
        }
    }

    /// Waits for the fleet's turn (spaced `interval` from the last departure of any process,
    /// within `allow`, the windows' counters starting from `seeds`): the turn, to be given
    /// back by [`Coordinator::departed`] the moment its request leaves; or the spent window.
    pub async fn acquire_turn(
        &self,
        interval: Duration,
        allow: Allowances,
        seeds: Seeds,
    ) -> Result<Result<Turn, (Window, i64)>, CoordError> {
        self.turn(interval, allow, seeds, true).await
    }

    /// Charges one request to the fleet's windows without a turn (a key with no rate to keep:
    /// nothing to space), the counters starting from `seeds`: `Err` with the spent window.
    pub async fn charge(
        &self,
        allow: Allowances,
        seeds: Seeds,
    ) -> Result<Result<(), (Window, i64)>, CoordError> {
        match self
            .ask(Duration::ZERO, allow, seeds, Ask::default())
            .await?
        {
            Answer::Exhausted { window, resets_at } => Ok(Err((window, resets_at))),
            _ => Ok(Ok(())),
        }
    }

    /// [`Coordinator::acquire_turn`] for a request no window counts (`GET /users`): paced with
    /// the fleet, charged to nothing.
    pub async fn acquire_free_turn(&self, interval: Duration) -> Result<Turn, CoordError> {
        match self
            .turn(interval, Allowances::default(), Seeds::default(), false)
            .await?
        {
            Ok(turn) => Ok(turn),
            Err(_) => Err(CoordError::Redis(
                "an uncharged turn met a spent window".into(),
            )),
        }
    }

    async fn turn(
        &self,
        interval: Duration,
        allow: Allowances,
        seeds: Seeds,
        charge: bool,
    ) -> Result<Result<Turn, (Window, i64)>, CoordError> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = format!("{}-{n}", self.owner);
        loop {
            let asked = tokio::time::Instant::now();
            let how = Ask {
                token: Some(&token),
                charge,
                ..Ask::default()
            };
            match self.ask(interval, allow, seeds, how).await? {
                Answer::Granted {
                    at_us, delay, seq, ..
                } => {
                    let answered = tokio::time::Instant::now();
                    wait_precisely(answered + delay).await;
                    return Ok(Ok(Turn {
                        token,
                        seq,
                        slot_us: at_us + micros(delay),
                        deadline: answered + delay,
                        rtt: answered - asked,
                    }));
                }
                Answer::Wait(d) => tokio::time::sleep(d).await,
                Answer::Exhausted { window, resets_at } => return Ok(Err((window, resets_at))),
            }
        }
    }

    /// Waits for this process's next leased slot (leasing [`lease_size`] slots spaced `interval`
    /// from the fleet's pace when none is left, within `allow`, counters from `seeds`): the
    /// slot, held until its request leaves; or the spent window. Slots are handed out in
    /// order, each no sooner than an interval after the last request left; a slot that cannot
    /// be used within its slack is skipped (and refunded by [`Coordinator::end_lease`]).
    pub async fn acquire_slot(
        &self,
        interval: Duration,
        allow: Allowances,
        seeds: Seeds,
    ) -> Result<Result<Slot, (Window, i64)>, CoordError> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut held = self.lease.clone().lock_owned().await;
        loop {
            let earliest = held.last_departure.map(|d| d + interval);
            if let Some(lease) = held.current.as_mut() {
                let now = tokio::time::Instant::now();
                while lease.left > 0 {
                    let at = earliest.map_or(lease.next, |e| e.max(lease.next)).max(now);
                    if at <= lease.next + lease.slack {
                        lease.next += lease.interval;
                        lease.left -= 1;
                        self.leased.store(u64::from(lease.left), Relaxed);
                        wait_precisely(at).await;
                        return Ok(Ok(Slot { leases: held, at }));
                    }
                    lease.next += lease.interval;
                    lease.left -= 1;
                    lease.skipped += 1;
                }
                if let Some(spent) = held.current.take() {
                    self.give_back_lease(spent).await?;
                }
            }
            let slack = (interval / 4).min(SLACK);
            let gap = Duration::from_micros(self.rtt_us.load(Relaxed)).min(interval) + slack;
            let asked = tokio::time::Instant::now();
            let how = Ask {
                slots: lease_size(interval),
                gap,
                ..Ask::default()
            };
            match self.ask(interval, allow, seeds, how).await? {
                Answer::Granted {
                    at_us,
                    delay,
                    slots,
                    next_us,
                    ..
                } => {
                    let answered = tokio::time::Instant::now();
                    self.rtt_us
                        .store((answered - asked).as_micros() as u64, Relaxed);
                    held.current = Some(Lease {
                        next: answered + delay,
                        left: slots,
                        skipped: 0,
                        name_us: next_us,
                        sec: at_us.div_euclid(1_000_000),
                        interval,
                        slack,
                    });
                }
                // The others wait for this lease rather than each asking.
                Answer::Wait(d) => tokio::time::sleep(d).await,
                Answer::Exhausted { window, resets_at } => return Ok(Err((window, resets_at))),
            }
        }
    }

    /// Gives back what is left of this process's lease (its run is over): the slots to come
    /// go back to the fleet's pace if nobody was granted since, and every unused slot is
    /// refunded to the windows.
    pub async fn end_lease(&self) -> Result<(), CoordError> {
        let lease = self.lease.lock().await.current.take();
        self.leased.store(0, std::sync::atomic::Ordering::Relaxed);
        match lease {
            Some(lease) => self.give_back_lease(lease).await,
            None => Ok(()),
        }
    }

    async fn give_back_lease(&self, lease: Lease) -> Result<(), CoordError> {
        let unused = lease.left + lease.skipped;
        if unused == 0 {
            return Ok(());
        }
        let mut con = self.con.clone();
        let _: i64 = self
            .returns
            .key(&self.prefix)
            .arg(lease.name_us)
            .arg(lease.left)
            .arg(unused)
            .arg(micros(lease.interval))
            .arg(lease.sec)
            .invoke_async(&mut con)
            .await
            .map_err(|e| CoordError::Redis(e.to_string()))?;
        Ok(())
    }

    /// Takes one request off the fleet's books for the current windows: VirusTotal refused it
    /// (a 429 spends nothing).
    pub async fn refund(&self) -> Result<(), CoordError> {
        let mut con = self.con.clone();
        let _: i64 = self
            .returns
            .key(&self.prefix)
            .arg(0)
            .arg(0)
            .arg(1)
            .arg(0)
            .arg("")
            .invoke_async(&mut con)
            .await
            .map_err(|e| CoordError::Redis(e.to_string()))?;
        Ok(())
    }

    /// Slots this process holds in its lease now (for the heartbeat).
    pub fn leased(&self) -> u64 {
        self.leased.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The request of `turn` left at `at` (this process's clock): the fleet's next slot is one
    /// interval after that, and the turn is free.
    pub async fn departed(
        &self,
        turn: Turn,
        at: tokio::time::Instant,
        interval: Duration,
    ) -> Result<(), CoordError> {
        let late = at.saturating_duration_since(turn.deadline) + turn.rtt;
        let mut con = self.con.clone();
        let _: i64 = self
            .departed
            .key(&self.prefix)
            .arg(&turn.token)
            .arg(micros(interval))
            .arg(turn.slot_us)
            .arg(micros(late))
            .invoke_async(&mut con)
            .await
            .map_err(|e| CoordError::Redis(e.to_string()))?;
        Ok(())
    }

    /// The answer to turn `seq`'s request came back `by` slower than the quickest: the fleet's
    /// next slot moves back by that much, if no other turn was granted since.
    pub async fn push(&self, seq: i64, by: Duration) -> Result<(), CoordError> {
        let mut con = self.con.clone();
        let _: i64 = self
            .push
            .key(&self.prefix)
            .arg(seq)
            .arg(micros(by))
            .invoke_async(&mut con)
            .await
            .map_err(|e| CoordError::Redis(e.to_string()))?;
        Ok(())
    }

    /// An answer another process published for `id`, if any.
    pub async fn answer(&self, id: &Subject) -> Result<Option<Vec<u8>>, CoordError> {
        let mut con = self.con.clone();
        redis::cmd("GET")
            .arg(format!("{}:answer:{id}", self.prefix))
            .query_async(&mut con)
            .await
            .map_err(|e| CoordError::Redis(e.to_string()))
    }

    /// In one step: the fleet's answer for `id`, or the claim of its lookup for this process
    /// for `lease`, or neither (another process is looking it up now). A claim whose holder
    /// has not said it is alive for [`ALIVE`] is taken over: a killed holder blocks no one
    /// longer than that.
    pub async fn answer_or_claim(
        &self,
        id: &Subject,
        lease: Duration,
    ) -> Result<Claim, CoordError> {
        let mut con = self.con.clone();
        let (code, value): (i64, Vec<u8>) = self
            .claim
            .key(format!("{}:answer:{id}", self.prefix))
            .key(format!("{}:flight:{id}", self.prefix))
            .arg(&self.owner)
            .arg(lease.as_millis().max(1) as u64)
            .arg(format!("{}:alive:", self.prefix))
            .invoke_async(&mut con)
            .await
            .map_err(|e| CoordError::Redis(e.to_string()))?;
        Ok(match code {
            1 => Claim::Answer(value),
            2 => Claim::Claimed,
            _ => Claim::Busy,
        })
    }

    /// Publishes the answer for each of `ids` (a file's three digests) for `ttl`, and ends
    /// the claims on them.
    pub async fn publish(
        &self,
        ids: &[Subject],
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), CoordError> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("SET")
                .arg(format!("{}:answer:{id}", self.prefix))
                .arg(value)
                .arg("PX")
                .arg(ttl.as_millis().max(1) as u64)
                .ignore();
            pipe.cmd("DEL")
                .arg(format!("{}:flight:{id}", self.prefix))
                .ignore();
        }
        let mut con = self.con.clone();
        pipe.query_async::<()>(&mut con)
            .await
            .map_err(|e| CoordError::Redis(e.to_string()))
    }

    /// Gives up the claim on `id` (the lookup failed: another process may try).
    pub async fn release(&self, id: &Subject) -> Result<(), CoordError> {
        let mut con = self.con.clone();
        redis::cmd("DEL")
            .arg(format!("{}:flight:{id}", self.prefix))
            .query_async::<()>(&mut con)
            .await
            .map_err(|e| CoordError::Redis(e.to_string()))
    }

    /// Says this process is alive and what it did (`me`), for [`Coordinator::members`] and
    /// for the claims it holds; both lapse [`ALIVE`] after the last heartbeat.
    pub async fn heartbeat(&self, me: &Member) -> Result<(), CoordError> {
        let mut con = self.con.clone();
        let value = serde_json::to_string(me).map_err(|e| CoordError::Redis(e.to_string()))?;
        let alive = ALIVE.as_millis() as u64;
        redis::pipe()
            .cmd("SET")
            .arg(format!("{}:member:{}:{}", self.prefix, me.host, me.pid))
            .arg(value)
            .arg("PX")
            .arg(alive)
            .ignore()
            .cmd("SET")
            .arg(format!("{}:alive:{}", self.prefix, self.owner))
            .arg(1)
            .arg("PX")
            .arg(alive)
            .ignore()
            .query_async::<()>(&mut con)
            .await
            .map_err(|e| CoordError::Redis(e.to_string()))
    }

    /// Says this process has left the fleet.
    pub async fn leave(&self, me: &Member) -> Result<(), CoordError> {
        let mut con = self.con.clone();
        redis::cmd("DEL")
            .arg(format!("{}:member:{}:{}", self.prefix, me.host, me.pid))
            .arg(format!("{}:alive:{}", self.prefix, self.owner))
            .query_async::<()>(&mut con)
            .await
            .map_err(|e| CoordError::Redis(e.to_string()))
    }

    /// The live processes of the fleet (those with a heartbeat in the last 5 s).
    pub async fn members(&self) -> Result<Vec<Member>, CoordError> {
        let mut con = self.con.clone();
        let err = |e: redis::RedisError| CoordError::Redis(e.to_string());
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}:member:*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut con)
                .await
                .map_err(err)?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut members = Vec::new();
        for key in keys {
            let value: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut con)
                .await
                .map_err(err)?;
            if let Some(member) = value.and_then(|v| serde_json::from_str(&v).ok()) {
                members.push(member);
            }
        }
        members.sort_by(|a: &Member, b: &Member| (&a.host, a.pid).cmp(&(&b.host, b.pid)));
        Ok(members)
    }

    /// What the fleet spent in the current hour, day and month (by Redis's clock).
    pub async fn spent(&self) -> Result<Spent, CoordError> {
        let mut con = self.con.clone();
        let (hour, day, month): (u64, u64, u64) = self
            .spent
            .key(&self.prefix)
            .invoke_async(&mut con)
            .await
            .map_err(|e| CoordError::Redis(e.to_string()))?;
        Ok(Spent { hour, day, month })
    }
}

mod endpoint;
#[cfg(feature = "test-server")]
pub mod test_server;

pub use endpoint::Endpoint;
