//! Three tonic services on loopback, A → B → C, each behind `ServerLayer`
//! and calling the next through `ClientLayer`: a request's deadline and its
//! cancellation follow it across process boundaries, as Go's `context` does
//! for gRPC.
//!
//! 1. A call with a 2 s budget: every hop prints the time it has left,
//!    shrinking hop by hop (each hop's `grpc-timeout` is its caller's
//!    remaining time).
//! 2. A call that waits at C; once C has it, the client cancels its own
//!    context: the call fails with `CANCELLED` and the cause, and every hop's
//!    request context ends with `client disconnected` (each hop's call to
//!    the next is dropped, which resets its HTTP/2 stream).
//! 3. Shutdown: the servers' root is cancelled with `ServerShutdown`, and
//!    they drain and exit.
//!
//! ```text
//! cargo run -p cancel-tree-tower --example grpc_chain
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use cancel_tree::{Cause, Context};
use cancel_tree_tower::{
    ClientLayer, ClientService, ContextError, RequestContextExt, ServerLayer, ServerShutdown,
};
use cancel_tree_tower_proto::hop_client::HopClient;
use cancel_tree_tower_proto::hop_server::{Hop, HopServer};
use cancel_tree_tower_proto::{CallReply, CallRequest, HopReport};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

/// How long the example waits for anything before giving up.
const PATIENCE: Duration = Duration::from_secs(10);

type Client = HopClient<ClientService<Channel>>;

/// A client for the hop at `addr`, carrying its callers' contexts.
fn client(addr: SocketAddr) -> Client {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect_lazy();
    HopClient::new(
        tower::ServiceBuilder::new()
            .layer(ClientLayer::new())
            .service(channel),
    )
}

/// One hop: reports its request's deadline, then calls the next hop (or,
/// at the end of the chain, waits if asked to).
struct Service {
    name: &'static str,
    next: Option<Client>,
    /// Tells `main` which hop's request context ended.
    ended: mpsc::UnboundedSender<&'static str>,
}

#[tonic::async_trait]
impl Hop for Service {
    async fn call(&self, request: Request<CallRequest>) -> Result<Response<CallReply>, Status> {
        let ctx = cancel_tree_tower::tonic::context(&request)?;
        let left = ctx.deadline().map(|d| d - ctx.now());
        match left {
            Some(left) => println!("[{}] got the call with {} left", self.name, ms(left)),
            None => println!("[{}] got the call, no deadline", self.name),
        }
        // Says how the request ended, whoever ended it: runs when its
        // context is cancelled, even after this handler was dropped.
        let _ = ctx.after_func({
            let (ctx, name, ended) = (ctx.clone(), self.name, self.ended.clone());
            move || {
                let why = ContextError::from_context(&ctx).expect("ended");
                if why.cause() != &cancel_tree::Error::Canceled {
                    println!("[{name}] request context ended: {why}");
                }
                let _ = ended.send(name);
            }
        });

        let CallRequest { wait, stall } = *request.get_ref();
        let mut hops = vec![HopReport {
            name: self.name.into(),
            remaining_micros: left.map(|l| l.as_micros() as u64),
        }];
        if let Some(next) = &self.next {
            // The next hop's call carries this request's context: its
            // deadline, and its cancellation.
            let call = Request::new(CallRequest { wait, stall }).with_context(&ctx);
            let reply = next.clone().call(call).await?;
            hops.extend(reply.into_inner().hops);
        } else if wait {
            ctx.done().await;
            return Err(cancel_tree_tower::tonic::status_for(&ctx).expect("ended"));
        }
        Ok(Response::new(CallReply { hops }))
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// Serves the hop `name` on 127.0.0.1 (a free port) until `root` is
/// cancelled.
async fn serve(
    name: &'static str,
    next: Option<SocketAddr>,
    root: &Context,
    ended: &mpsc::UnboundedSender<&'static str>,
) -> std::io::Result<(
    SocketAddr,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let service = Service {
        name,
        next: next.map(client),
        ended: ended.clone(),
    };
    let shutdown = {
        let root = root.clone();
        async move {
            root.done().await;
        }
    };
    let server = Server::builder()
        .layer(ServerLayer::new(root.clone()))
        .add_service(HopServer::new(service))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown);
    println!("[{name}] listening on {addr}");
    Ok((addr, tokio::spawn(server)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (root, shutdown) = Context::background().with_cancel();
    let (ended_tx, mut ended) = mpsc::unbounded_channel();
    let (c, c_task) = serve("C", None, &root, &ended_tx).await?;
    let (b, b_task) = serve("B", Some(c), &root, &ended_tx).await?;
    let (a, a_task) = serve("A", Some(b), &root, &ended_tx).await?;
    let mut a_client = client(a);

    println!("\n-- 1. a call with a 2 s budget");
    let (ctx, _done) = Context::background().with_timeout(Duration::from_secs(2));
    let reply = a_client
        .call(Request::new(CallRequest::default()).with_context(&ctx))
        .await?;
    for hop in &reply.get_ref().hops {
        let left = hop.remaining_micros.map(Duration::from_micros);
        println!(
            "client: {} had {}",
            hop.name,
            left.map_or("no deadline".into(), ms)
        );
    }
    // Wait for the three request contexts to end (a plain cancel when the
    // response went out), so the next part starts clean.
    for _ in 0..3 {
        tokio::time::timeout(PATIENCE, ended.recv()).await?;
    }

    println!("\n-- 2. a call that waits at C; the client cancels it");
    let (ctx, cancel) = Context::background().with_cancel();
    let call = tokio::spawn({
        let mut a_client = a_client.clone();
        let wait = CallRequest {
            wait: true,
            stall: false,
        };
        async move { a_client.call(Request::new(wait).with_context(&ctx)).await }
    });
    // C prints when the call reaches it; give it that long.
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!("client: cancelling (the user pressed stop)");
    cancel.cancel_with(Cause::msg("the user pressed stop"));
    let status = tokio::time::timeout(PATIENCE, call)
        .await??
        .expect_err("the call was cancelled");
    println!(
        "client: call failed: {:?}: {}",
        status.code(),
        status.message()
    );
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match tokio::time::timeout(PATIENCE, ended.recv()).await? {
            Some(hop) => seen.push(hop),
            None => break,
        }
    }
    seen.sort_unstable();
    println!("client: the cancel reached {}", seen.join(", "));

    println!("\n-- 3. shutdown");
    shutdown.cancel_with(ServerShutdown);
    for (name, task) in [("A", a_task), ("B", b_task), ("C", c_task)] {
        tokio::time::timeout(PATIENCE, task).await???;
        println!("[{name}] stopped");
    }
    println!("chain finished");
    Ok(())
}
