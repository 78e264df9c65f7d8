//! Real servers on loopback for the integration tests: the `chain.Hop`
//! gRPC service on tonic's transport (each hop records what its request's
//! context says and calls the next hop through `ClientLayer`), and a
//! hyper client.
#![allow(dead_code)] // each test file uses its own part

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cancel_tree::{Cause, Context, Error};
use cancel_tree_tower::{ClientLayer, ClientService, RequestContextExt, ServerLayer};
use cancel_tree_tower_proto::hop_client::HopClient;
use cancel_tree_tower_proto::hop_server::{Hop, HopServer};
use cancel_tree_tower_proto::{CallReply, CallRequest, HopReport};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

/// How long anything that should happen "soon" may take before a test
/// fails: generous, for a loaded machine.
pub const SOON: Duration = Duration::from_secs(5);

/// What a hop saw.
#[derive(Clone, Debug)]
pub enum Event {
    /// The hop's handler started.
    Started {
        hop: &'static str,
        /// `deadline - now` on the context's clock.
        remaining: Option<Duration>,
        deadline: Option<cancel_tree::Instant>,
        /// Taken after `remaining`.
        at: Instant,
    },
    /// The hop's request context ended.
    Ended {
        hop: &'static str,
        error: Error,
        cause: Cause,
    },
    /// The hop's handler future was dropped before it finished.
    Dropped { hop: &'static str },
}

/// The events of every hop, in order.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Event>>>);

impl Log {
    pub fn push(&self, e: Event) {
        self.0.lock().unwrap().push(e);
    }

    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    pub fn all(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }

    /// The first event `pick` accepts, waiting up to [`SOON`].
    pub async fn wait_for<T>(&self, what: &str, pick: impl Fn(&Event) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(found) = self.0.lock().unwrap().iter().find_map(&pick) {
                return found;
            }
            assert!(
                start.elapsed() < SOON,
                "no {what} after {SOON:?}; events: {:#?}",
                self.all()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `hop`'s `Started` event: `(remaining, deadline, at)`.
    pub async fn started(
        &self,
        hop: &'static str,
    ) -> (Option<Duration>, Option<cancel_tree::Instant>, Instant) {
        self.wait_for(&format!("start of {hop}"), |e| match e {
            Event::Started {
                hop: h,
                remaining,
                deadline,
                at,
            } if *h == hop => Some((*remaining, *deadline, *at)),
            _ => None,
        })
        .await
    }

    /// How `hop`'s request context ended.
    pub async fn ended(&self, hop: &'static str) -> (Error, Cause) {
        self.wait_for(&format!("end of {hop}'s context"), |e| match e {
            Event::Ended {
                hop: h,
                error,
                cause,
            } if *h == hop => Some((*error, cause.clone())),
            _ => None,
        })
        .await
    }

    pub fn count_started(&self) -> usize {
        self.all()
            .iter()
            .filter(|e| matches!(e, Event::Started { .. }))
            .count()
    }
}

/// A client for a hop, through `ClientLayer`.
pub type LayeredClient = HopClient<ClientService<Channel>>;

/// A lazily connecting channel to `addr`, behind `ClientLayer`.
pub fn layered_client(addr: SocketAddr) -> LayeredClient {
    let channel = plain_channel(addr);
    HopClient::new(
        tower::ServiceBuilder::new()
            .layer(ClientLayer::new())
            .service(channel),
    )
}

/// A plain tonic channel (no layer) to `addr`.
pub fn plain_channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect_lazy()
}

/// One hop of the chain.
pub struct ChainHop {
    pub name: &'static str,
    pub next: Option<LayeredClient>,
    pub log: Log,
}

/// Pushes `Dropped` if the handler future is dropped before it finished.
struct DropWatch {
    hop: &'static str,
    log: Log,
    finished: bool,
}

impl Drop for DropWatch {
    fn drop(&mut self) {
        if !self.finished {
            self.log.push(Event::Dropped { hop: self.hop });
        }
    }
}

#[tonic::async_trait]
impl Hop for ChainHop {
    async fn call(&self, request: Request<CallRequest>) -> Result<Response<CallReply>, Status> {
        let ctx = cancel_tree_tower::tonic::context(&request)?;
        let remaining = ctx.deadline().map(|d| d - ctx.now());
        self.log.push(Event::Started {
            hop: self.name,
            remaining,
            deadline: ctx.deadline(),
            at: Instant::now(),
        });
        // Watches the context from outside the handler, which may be
        // dropped before it ends.
        tokio::spawn({
            let (ctx, log, hop) = (ctx.clone(), self.log.clone(), self.name);
            async move {
                let error = ctx.done().await;
                let cause = ctx.cause().expect("an ended context has a cause");
                log.push(Event::Ended { hop, error, cause });
            }
        });
        let mut watch = DropWatch {
            hop: self.name,
            log: self.log.clone(),
            finished: false,
        };
        let CallRequest { wait, stall } = *request.get_ref();
        let mut hops = vec![HopReport {
            name: self.name.into(),
            remaining_micros: remaining.map(|r| r.as_micros() as u64),
        }];
        let result = if let Some(next) = &self.next {
            let call = Request::new(CallRequest { wait, stall }).with_context(&ctx);
            next.clone().call(call).await.map(|reply| {
                hops.extend(reply.into_inner().hops);
            })
        } else if stall {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        } else if wait {
            ctx.done().await;
            Err(cancel_tree_tower::tonic::status_for(&ctx).expect("ended"))
        } else {
            Ok(())
        };
        watch.finished = true;
        result.map(|()| Response::new(CallReply { hops }))
    }
}

/// A running tonic server.
pub struct Running {
    pub addr: SocketAddr,
    pub task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Serves one hop on 127.0.0.1 (port 0) on tonic's transport behind
/// `layer`, until `layer`'s root is cancelled.
pub async fn serve_hop(
    name: &'static str,
    next: Option<SocketAddr>,
    log: &Log,
    layer: ServerLayer,
) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let hop = ChainHop {
        name,
        next: next.map(layered_client),
        log: log.clone(),
    };
    let root = layer.root().clone();
    let server = Server::builder()
        .layer(layer)
        .add_service(HopServer::new(hop))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), async move {
            root.done().await;
        });
    Running {
        addr,
        task: tokio::spawn(server),
    }
}

/// A → B → C, each hop behind its own `ServerLayer` on `root`; returns the
/// servers, A first.
pub async fn serve_chain(log: &Log, root: &Context) -> [Running; 3] {
    let c = serve_hop("C", None, log, ServerLayer::new(root.clone())).await;
    let b = serve_hop("B", Some(c.addr), log, ServerLayer::new(root.clone())).await;
    let a = serve_hop("A", Some(b.addr), log, ServerLayer::new(root.clone())).await;
    [a, b, c]
}

/// The gRPC status and message of one `Hop/Call` sent over a fresh HTTP/2
/// connection by hyper, with `headers` added: a client with no timer of
/// its own (tonic's client enforces `grpc-timeout` locally), so what comes
/// back is the server's answer.
pub async fn raw_grpc_call(
    addr: SocketAddr,
    headers: &[(&str, &str)],
    message: CallRequest,
) -> (String, String) {
    use http_body_util::{BodyExt, Full};
    use prost::Message;

    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    // A gRPC message: uncompressed flag, 4-byte big-endian length, bytes.
    let encoded = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    frame.extend_from_slice(&encoded);
    let mut request = http::Request::post(format!("http://{addr}/chain.Hop/Call"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(bytes::Bytes::from(frame)))
        .expect("a request");
    let response = send.send_request(request).await.expect("a response");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("the body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    // Trailers-Only responses carry the status in the headers.
    let field = |name: &str| {
        parts
            .headers
            .get(name)
            .or_else(|| trailers.get(name))
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    (field("grpc-status"), field("grpc-message"))
}

/// The `ContextError` a client-layer status carries as its source.
pub fn context_error(status: &Status) -> Option<&cancel_tree_tower::ContextError> {
    std::error::Error::source(status)?.downcast_ref()
}
