//! A fake proxy-wasm host for driving [`Plugin`] natively, without Envoy.
//!
//! - [`Envoy`] is the process: one clock the test advances by hand, one shared-data store
//!   (compare-and-swap as Envoy does it: a CAS token is checked only for a key that exists),
//!   and the stats counters. Every VM made from it shares these.
//! - [`FakeHost`] is one VM (one Envoy worker): its effective context, its streams (request
//!   headers, and what the plugin did to them), the HTTP calls it dispatched, and the tick
//!   timers of its root contexts. Clones share the state (`Rc<RefCell<..>>`), as the plugin
//!   keeps several clones of its host.
//! - [`Worker`] is one filter configuration on a VM: its root context and its [`Plugin`], with
//!   the host's side of every callback (a request's headers, a tick, a call's answer, a
//!   client that leaves).
//!
//! Modelled on Envoy 1.40 / proxy-wasm-cpp-host: a call acts on the effective context;
//! `set_effective_context` fails for a deleted context and then changes nothing; an HTTP
//! call's answer goes to the context that was effective when it was dispatched, and is never
//! delivered if that context is gone; `set_tick_period` from any context re-arms its root's
//! timer to now + period (Envoy's `Wasm::setTimerPeriod` disables and re-creates the timer).
//! The foreign function `verify_signature` is not there (`NotFound`), so the plugin verifies
//! signatures with its built-in code.
//!
//! Anything the plugin does that a real host would reject or misroute (acting on the root or
//! a deleted stream, resuming a stream that was answered, answering one twice) is recorded as
//! a violation; [`Worker::assert_clean`] fails the test on any.

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use jwt_claims_filter::config::FilterConfig;
use jwt_claims_filter::host::{Host, Status};
use jwt_claims_filter::keycache::KeyRecord;
use jwt_claims_filter::plugin::{Flow, Plugin};

/// The fake clock's start: inside the validity of every token the tests mint.
pub const START_MS: u64 = 1_800_000_000_000;

/// The process-wide state: clock, shared data, counters, context ids.
struct Process {
    now_ms: u64,
    shared: BTreeMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    counters: Vec<(String, i64)>,
    next_context: u32,
    next_token: u32,
}

/// The Envoy process; clones share it.
#[derive(Clone)]
pub struct Envoy(Rc<RefCell<Process>>);

impl Default for Envoy {
    fn default() -> Self {
        Envoy::new()
    }
}

impl Envoy {
    pub fn new() -> Envoy {
        Envoy(Rc::new(RefCell::new(Process {
            now_ms: START_MS,
            shared: BTreeMap::new(),
            next_cas: 1,
            counters: Vec::new(),
            next_context: 1,
            next_token: 1,
        })))
    }

    pub fn now_ms(&self) -> u64 {
        self.0.borrow().now_ms
    }

    /// Milliseconds since the test's start.
    pub fn elapsed_ms(&self) -> u64 {
        self.now_ms() - START_MS
    }

    pub fn set_now_ms(&self, now_ms: u64) {
        let mut p = self.0.borrow_mut();
        assert!(now_ms >= p.now_ms, "the clock does not go back");
        p.now_ms = now_ms;
    }

    fn alloc_context(&self) -> u32 {
        let mut p = self.0.borrow_mut();
        let id = p.next_context;
        p.next_context += 1;
        id
    }

    /// A new VM (an Envoy worker thread's) in this process.
    pub fn vm(&self) -> FakeHost {
        FakeHost { process: self.clone(), vm: Rc::new(RefCell::new(Vm::default())) }
    }

    /// A counter's value, by its full name (`jwt_claims_filter.jwks_fetch_success`).
    pub fn counter(&self, name: &str) -> i64 {
        self.0.borrow().counters.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v)
    }

    /// The filter's key records in shared data, decoded.
    pub fn key_records(&self) -> Vec<(String, KeyRecord)> {
        self.0
            .borrow()
            .shared
            .iter()
            .filter(|(k, _)| k.starts_with("jwt_claims_filter.jwks|"))
            .map(|(k, (v, _))| (k.clone(), KeyRecord::decode(v).expect("a key record")))
            .collect()
    }

    /// Runs every worker's tick timer up to `until_ms` (since the start), in time order, then
    /// leaves the clock there.
    pub fn run_until(&self, workers: &mut [&mut Worker], until_ms: u64) {
        let until = START_MS + until_ms;
        loop {
            let next = workers
                .iter()
                .enumerate()
                .filter_map(|(i, w)| w.next_tick_ms().map(|t| (t, i)))
                .filter(|(t, _)| *t <= until)
                .min();
            let Some((at, i)) = next else { break };
            self.set_now_ms(at.max(self.now_ms()));
            workers[i].tick();
        }
        self.set_now_ms(until.max(self.now_ms()));
    }
}

/// What the plugin did to a stream, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Removed(String),
    Added(String, String),
    Replaced(String, String),
    Responded { status: u32, headers: Vec<(String, String)>, body: String, at_ms: u64 },
    Resumed { at_ms: u64 },
}

/// One request stream.
#[derive(Debug, Clone)]
pub struct Stream {
    pub root: u32,
    /// The request headers as they are now (after the plugin's changes).
    pub headers: Vec<(String, String)>,
    /// What `on_request` returned.
    pub flow: Option<Flow>,
    pub events: Vec<Event>,
    /// The host deleted the stream (its client went away).
    pub deleted: bool,
}

/// Where a request stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Paused, neither resumed nor answered.
    Waiting,
    /// Went on from `on_request` directly.
    Continued,
    /// Paused, then resumed.
    Resumed { at_ms: u64 },
    /// Answered locally.
    Responded { status: u32, body: String, www_authenticate: String, at_ms: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    Pending,
    Answered,
    /// The host cancelled it (its context went away).
    Cancelled,
}

/// A dispatched HTTP call.
#[derive(Debug, Clone)]
pub struct Call {
    pub token: u32,
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    /// The effective context when it was dispatched: the one its answer goes to.
    pub context: u32,
    /// Milliseconds since the test's start.
    pub at_ms: u64,
    pub state: CallState,
}

impl Call {
    pub fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v.as_str())
    }
}

/// How the test answers a call.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A response with this status and body.
    Http(u32, String),
    /// No response at all (connection refused or reset, timeout): `num_headers` 0.
    Reset,
}

impl Reply {
    pub fn ok(body: impl Into<String>) -> Reply {
        Reply::Http(200, body.into())
    }
}

#[derive(Default)]
struct Timer {
    period: Option<Duration>,
    next_ms: Option<u64>,
}

#[derive(Default)]
struct Vm {
    effective: u32,
    roots: HashMap<u32, Timer>,
    streams: BTreeMap<u32, Stream>,
    calls: Vec<Call>,
    /// The response of the call being answered.
    answering: Option<Reply>,
    violations: Vec<String>,
    foreign_calls: usize,
    /// Runs once, at the start of the next `set_shared_data` (another worker writing between
    /// this one's read and its write).
    before_next_shared_write: Option<Box<dyn FnOnce()>>,
}

/// One VM's host; clones share its state.
#[derive(Clone)]
pub struct FakeHost {
    process: Envoy,
    vm: Rc<RefCell<Vm>>,
}

impl FakeHost {
    /// The root a context's timer calls belong to: itself for a root, its root for a stream.
    fn root_of(&self, context: u32) -> Option<u32> {
        let vm = self.vm.borrow();
        if vm.roots.contains_key(&context) {
            return Some(context);
        }
        vm.streams.get(&context).map(|s| s.root)
    }

    /// Applies `f` to the effective context's live stream, or records a violation.
    fn on_stream(&self, what: &str, f: impl FnOnce(&mut Stream, u64)) {
        let now = self.process.elapsed_ms();
        let mut vm = self.vm.borrow_mut();
        let effective = vm.effective;
        match vm.streams.get_mut(&effective) {
            Some(stream) if !stream.deleted => f(stream, now),
            Some(_) => vm.violations.push(format!("{what} on deleted stream {effective}")),
            None => vm.violations.push(format!("{what} on context {effective}, which is no stream")),
        }
    }

    /// Before the next write to shared data, `hook` runs (with no state borrowed).
    pub fn before_next_shared_write(&self, hook: impl FnOnce() + 'static) {
        self.vm.borrow_mut().before_next_shared_write = Some(Box::new(hook));
    }

    pub fn calls(&self) -> Vec<Call> {
        self.vm.borrow().calls.clone()
    }

    pub fn foreign_calls(&self) -> usize {
        self.vm.borrow().foreign_calls
    }
}

fn serialize_map(map: &[(String, String)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (n, v) in map {
        bytes.extend_from_slice(&(n.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (n, v) in map {
        bytes.extend_from_slice(n.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(v.as_bytes());
        bytes.push(0);
    }
    bytes
}

impl Host for FakeHost {
    fn now_ms(&self) -> u64 {
        self.process.now_ms()
    }

    fn set_tick_period(&self, period: Duration) {
        let now = self.process.now_ms();
        let effective = self.vm.borrow().effective;
        let Some(root) = self.root_of(effective) else {
            self.vm.borrow_mut().violations.push(format!("set_tick_period on unknown context {effective}"));
            return;
        };
        let mut vm = self.vm.borrow_mut();
        let timer = vm.roots.entry(root).or_default();
        timer.period = Some(period);
        // Envoy re-arms the timer on every call: the next tick is one period from now.
        timer.next_ms = (!period.is_zero()).then(|| now + period.as_millis() as u64);
    }

    fn request_header_pairs(&self) -> Option<Vec<u8>> {
        let vm = self.vm.borrow();
        vm.streams.get(&vm.effective).map(|s| serialize_map(&s.headers))
    }

    fn remove_request_header(&self, name: &str) {
        self.on_stream("remove_request_header", |s, _| {
            s.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            s.events.push(Event::Removed(name.to_string()));
        });
    }

    fn add_request_header(&self, name: &str, value: &str) {
        self.on_stream("add_request_header", |s, _| {
            s.headers.push((name.to_string(), value.to_string()));
            s.events.push(Event::Added(name.to_string(), value.to_string()));
        });
    }

    fn replace_request_header(&self, name: &str, value: &str) {
        self.on_stream("replace_request_header", |s, _| {
            s.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            s.headers.push((name.to_string(), value.to_string()));
            s.events.push(Event::Replaced(name.to_string(), value.to_string()));
        });
    }

    fn send_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        let mut twice = None;
        self.on_stream("send_response", |s, now| {
            if s.events.iter().any(|e| matches!(e, Event::Responded { .. } | Event::Resumed { .. })) {
                twice = Some(format!("send_response on a stream already answered or resumed: {:?}", s.events));
            }
            s.events.push(Event::Responded {
                status,
                headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
                body: String::from_utf8_lossy(body).into_owned(),
                at_ms: now,
            });
        });
        if let Some(v) = twice {
            self.vm.borrow_mut().violations.push(v);
        }
    }

    fn resume_request(&self) {
        let mut wrong = None;
        self.on_stream("resume_request", |s, now| {
            if s.flow != Some(Flow::Pause)
                || s.events.iter().any(|e| matches!(e, Event::Responded { .. } | Event::Resumed { .. }))
            {
                wrong = Some(format!("resume_request on a stream that was not waiting: {:?} {:?}", s.flow, s.events));
            }
            s.events.push(Event::Resumed { at_ms: now });
        });
        if let Some(v) = wrong {
            self.vm.borrow_mut().violations.push(v);
        }
    }

    fn set_effective_context(&self, context_id: u32) -> Result<(), Status> {
        let mut vm = self.vm.borrow_mut();
        let live = vm.roots.contains_key(&context_id) || vm.streams.get(&context_id).is_some_and(|s| !s.deleted);
        if !live {
            return Err(Status::BAD_ARGUMENT);
        }
        vm.effective = context_id;
        Ok(())
    }

    fn dispatch_http_call(&self, cluster: &str, headers: &[(&str, &str)], timeout: Duration) -> Result<u32, Status> {
        let at_ms = self.process.elapsed_ms();
        let token = {
            let mut p = self.process.0.borrow_mut();
            let t = p.next_token;
            p.next_token += 1;
            t
        };
        let mut vm = self.vm.borrow_mut();
        let context = vm.effective;
        vm.calls.push(Call {
            token,
            cluster: cluster.to_string(),
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            timeout,
            context,
            at_ms,
            state: CallState::Pending,
        });
        Ok(token)
    }

    fn call_response_header(&self, name: &str) -> Result<Option<Vec<u8>>, Status> {
        match &self.vm.borrow().answering {
            Some(Reply::Http(status, _)) => Ok((name == ":status").then(|| status.to_string().into_bytes())),
            Some(Reply::Reset) | None => Err(Status::NOT_FOUND),
        }
    }

    fn call_response_body(&self, max_size: usize) -> Result<Option<Vec<u8>>, Status> {
        match &self.vm.borrow().answering {
            Some(Reply::Http(_, body)) => {
                Ok(Some(body.as_bytes().iter().take(max_size).copied().collect::<Vec<u8>>()).filter(|b| !b.is_empty()))
            }
            Some(Reply::Reset) | None => Err(Status::NOT_FOUND),
        }
    }

    fn shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), Status> {
        match self.process.0.borrow().shared.get(key) {
            Some((value, cas)) => Ok((Some(value.clone()), Some(*cas))),
            None => Ok((None, None)),
        }
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), Status> {
        let hook = self.vm.borrow_mut().before_next_shared_write.take();
        if let Some(hook) = hook {
            hook();
        }
        let mut p = self.process.0.borrow_mut();
        if let (Some(cas), Some((_, current))) = (cas, p.shared.get(key)) {
            if cas != 0 && cas != *current {
                return Err(Status::CAS_MISMATCH);
            }
        }
        let next = p.next_cas;
        p.next_cas += 1;
        p.shared.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }

    fn define_counter(&self, name: &str) -> Option<u32> {
        let mut p = self.process.0.borrow_mut();
        let index = match p.counters.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                p.counters.push((name.to_string(), 0));
                p.counters.len() - 1
            }
        };
        Some(index as u32 + 1)
    }

    fn increment_counter(&self, id: u32, by: i64) {
        let mut p = self.process.0.borrow_mut();
        match p.counters.get_mut(id as usize - 1) {
            Some((_, value)) => *value += by,
            None => {
                drop(p);
                self.vm.borrow_mut().violations.push(format!("increment of undefined counter {id}"));
            }
        }
    }

    fn call_foreign_function(&self, _name: &str, _arguments: &[u8]) -> Result<Option<Vec<u8>>, Status> {
        self.vm.borrow_mut().foreign_calls += 1;
        Err(Status::NOT_FOUND)
    }
}

/// One filter configuration (root context and plugin) on a VM.
pub struct Worker {
    pub envoy: Envoy,
    pub host: FakeHost,
    pub root: u32,
    pub plugin: Plugin<FakeHost>,
}

impl Worker {
    /// A new VM in `envoy`, configured with `config` (JSON).
    pub fn start(envoy: &Envoy, config: &str) -> Worker {
        Worker::configure(envoy, envoy.vm(), config)
    }

    /// A new root context on the same VM, configured with `config`: the configuration that
    /// replaces this one.
    pub fn replaced_by(&self, config: &str) -> Worker {
        Worker::configure(&self.envoy, self.host.clone(), config)
    }

    fn configure(envoy: &Envoy, host: FakeHost, config: &str) -> Worker {
        let root = envoy.alloc_context();
        host.vm.borrow_mut().roots.insert(root, Timer::default());
        let config = FilterConfig::parse(config.as_bytes()).expect("a valid configuration");
        let plugin = host.enter(root, || Plugin::new(host.clone(), config, root));
        Worker { envoy: envoy.clone(), host, root, plugin }
    }

    /// When this root's timer fires next (absolute ms), if it is armed.
    pub fn next_tick_ms(&self) -> Option<u64> {
        self.host.vm.borrow().roots.get(&self.root).and_then(|t| t.next_ms)
    }

    pub fn tick_period(&self) -> Option<Duration> {
        self.host.vm.borrow().roots.get(&self.root).and_then(|t| t.period)
    }

    /// The timer fires now: `on_tick`, then Envoy re-arms it with the period then set.
    pub fn tick(&mut self) {
        let (host, root) = (self.host.clone(), self.root);
        host.enter(root, || self.plugin.on_tick(root));
        let now = self.envoy.now_ms();
        let mut vm = self.host.vm.borrow_mut();
        if let Some(timer) = vm.roots.get_mut(&root) {
            timer.next_ms = timer.period.filter(|p| !p.is_zero()).map(|p| now + p.as_millis() as u64);
        }
    }

    /// Runs this worker's timer up to `until_ms` since the start.
    pub fn run_until(&mut self, until_ms: u64) {
        let envoy = self.envoy.clone();
        envoy.run_until(&mut [self], until_ms);
    }

    /// A request arrives with these headers: a new stream, and its `on_request`.
    pub fn request(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.envoy.alloc_context();
        self.host.vm.borrow_mut().streams.insert(
            id,
            Stream {
                root: self.root,
                headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
                flow: None,
                events: Vec::new(),
                deleted: false,
            },
        );
        let host = self.host.clone();
        let flow = host.enter(id, || self.plugin.on_request(id));
        if let Some(s) = self.host.vm.borrow_mut().streams.get_mut(&id) {
            s.flow = Some(flow);
        }
        id
    }

    /// A GET with `Authorization: Bearer <token>` and a forged claim header.
    pub fn get_with(&mut self, token: &str) -> u32 {
        let auth = format!("Bearer {token}");
        self.request(&[
            (":method", "GET"),
            (":path", "/get"),
            (":authority", "app.example.com"),
            (":scheme", "https"),
            ("authorization", &auth),
            ("x-jwt-claim.groups", "forged-admins"),
        ])
    }

    /// The client goes away: the host deletes the stream; with `on_done`, it also tells the
    /// plugin (the stream's `on_done`), as Envoy does right after.
    pub fn client_leaves(&mut self, stream: u32, on_done: bool) {
        {
            let mut vm = self.host.vm.borrow_mut();
            vm.streams.get_mut(&stream).expect("a stream").deleted = true;
            // The host cancels the calls that belong to the stream.
            for call in vm.calls.iter_mut().filter(|c| c.context == stream && c.state == CallState::Pending) {
                call.state = CallState::Cancelled;
            }
        }
        if on_done {
            self.plugin.forget_request(stream);
        }
    }

    /// The root context goes away (configuration replaced): the host cancels its calls, then
    /// its `on_done` abandons the fetches (when `abandon`).
    pub fn root_done(&mut self, abandon: bool) {
        {
            let mut vm = self.host.vm.borrow_mut();
            let root = self.root;
            for call in vm.calls.iter_mut().filter(|c| c.context == root && c.state == CallState::Pending) {
                call.state = CallState::Cancelled;
            }
            vm.roots.remove(&root);
        }
        if abandon {
            let (host, root) = (self.host.clone(), self.root);
            // on_done runs in the root's context; the root is being deleted.
            host.vm.borrow_mut().effective = root;
            self.plugin.abandon_fetches();
            host.vm.borrow_mut().effective = 0;
        }
    }

    /// The calls this worker's VM dispatched.
    pub fn calls(&self) -> Vec<Call> {
        self.host.calls()
    }

    pub fn pending_calls(&self) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.state == CallState::Pending).collect()
    }

    /// The one pending call; fails unless there is exactly one.
    pub fn only_pending_call(&self) -> Call {
        let pending = self.pending_calls();
        assert_eq!(pending.len(), 1, "exactly one pending call: {pending:?}");
        pending.into_iter().next().expect("one call")
    }

    /// The host answers call `token` (to the context that dispatched it).
    pub fn answer(&mut self, token: u32, reply: Reply) {
        let call = self.calls().into_iter().find(|c| c.token == token).expect("a call of this VM");
        assert_eq!(call.state, CallState::Pending, "call {token} is not pending: {call:?}");
        assert_eq!(call.context, self.root, "the answer goes to the dispatching context, not this root: {call:?}");
        let (num_headers, body_size) = match &reply {
            Reply::Http(_, body) => (3, body.len()),
            Reply::Reset => (0, 0),
        };
        {
            let mut vm = self.host.vm.borrow_mut();
            if let Some(c) = vm.calls.iter_mut().find(|c| c.token == token) {
                c.state = CallState::Answered;
            }
            vm.answering = Some(reply);
        }
        let (host, root) = (self.host.clone(), self.root);
        host.enter(root, || self.plugin.on_fetch_response(root, token, num_headers, body_size));
        self.host.vm.borrow_mut().answering = None;
    }

    pub fn stream(&self, id: u32) -> Stream {
        self.host.vm.borrow().streams.get(&id).expect("a stream").clone()
    }

    pub fn outcome(&self, id: u32) -> Outcome {
        let s = self.stream(id);
        for event in &s.events {
            match event {
                Event::Responded { status, headers, body, at_ms } => {
                    let www_authenticate =
                        headers.iter().find(|(n, _)| n == "www-authenticate").map_or("", |(_, v)| v).to_string();
                    return Outcome::Responded { status: *status, body: body.clone(), www_authenticate, at_ms: *at_ms };
                }
                Event::Resumed { at_ms } => return Outcome::Resumed { at_ms: *at_ms },
                _ => {}
            }
        }
        match s.flow {
            Some(Flow::Continue) => Outcome::Continued,
            _ => Outcome::Waiting,
        }
    }

    /// A request header's value now, if present once (fails if present more than once).
    pub fn header(&self, id: u32, name: &str) -> Option<String> {
        let s = self.stream(id);
        let values: Vec<&String> = s.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v).collect();
        assert!(values.len() <= 1, "{name} appears {} times: {values:?}", values.len());
        values.first().map(|v| v.to_string())
    }

    /// Fails if the plugin did anything a real host would reject or misroute.
    pub fn assert_clean(&self) {
        let vm = self.host.vm.borrow();
        assert!(vm.violations.is_empty(), "host violations: {:#?}", vm.violations);
    }
}

impl FakeHost {
    /// Runs `f` as a callback of `context`: the effective context is `context` during it
    /// and none afterwards.
    fn enter<R>(&self, context: u32, f: impl FnOnce() -> R) -> R {
        self.vm.borrow_mut().effective = context;
        let result = f();
        self.vm.borrow_mut().effective = 0;
        result
    }
}
