//! MsgTrans 1.0 programs, written the way its README and examples use the
//! API, compiled and run against msgtrans. Each program's body is 1.0's;
//! what differs is listed here, and nothing else does:
//!
//! 1. `use` lines: `msgtrans::tokio` is not re-exported (msgtrans does not
//!    depend on tokio; its futures run on any executor), so `tokio` is
//!    imported directly.
//! 2. `#[tokio::main] async fn main()` becomes `async fn main(addr..)`: the
//!    fixed ports of the 1.0 text are parameters, so tests can run side by
//!    side; `println!` becomes `say!`, which also records the line so the
//!    test can check what the program saw.
//! 3. QUIC: as in 1.0, `QuicServerConfig::new` with no certificate gets a
//!    self-signed one, so the test's QUIC client uses 1.0's
//!    `danger_skip_verification`.
//! 4. `TransportContext::respond` returns a `Result` (1.0 returned nothing
//!    and dropped errors), so 1.0's `context.respond(..);` statements warn
//!    about an unused result; the programs allow that warning.
//! 5. `TcpClientConfig::with_nodelay` is gone: every session has
//!    `TCP_NODELAY` on, so the call is dropped from the echo client.
//!
//! A request nobody answers ends in `Err(Timeout)` here, where 1.0 returned
//! `Ok` with `data: None`; the 1.0 programs below treat both the same way.

mod common;

use std::net::SocketAddr;
use std::sync::Mutex;

use common::{within, GUARD};

/// What the programs printed.
static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// `println!` that also keeps the line.
macro_rules! say {
    ($($t:tt)*) => {{
        let line = format!($($t)*);
        println!("{line}");
        crate::LOG.lock().unwrap().push(line);
    }};
}

fn said(prefix: &str) -> Vec<String> {
    LOG.lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with(prefix))
        .cloned()
        .collect()
}

/// A port nothing listens on now (the programs take fixed addresses).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// README, "Create a Multi-Protocol Server".
#[allow(unused_must_use)]
mod readme_server {
    use msgtrans::{
        event::ServerEvent,
        protocol::{QuicServerConfig, TcpServerConfig, WebSocketServerConfig},
        transport::TransportServerBuilder,
    };

    pub async fn main(tcp: &str, ws: &str, quic: &str) -> Result<(), Box<dyn std::error::Error>> {
        // Configure multiple protocols - the same business logic serves all of them.
        let tcp_config = TcpServerConfig::new(tcp)?;
        let websocket_config = WebSocketServerConfig::new(ws)?.with_path("/ws");
        let quic_config = QuicServerConfig::new(quic)?;

        let server = TransportServerBuilder::new()
            .max_connections(10000)
            .with_protocol(tcp_config)
            .with_protocol(websocket_config)
            .with_protocol(quic_config)
            .build()
            .await?;

        // Subscribe to events before serving so nothing is missed.
        let mut events = server.subscribe_events();

        // Drive the listeners. `serve()` runs until the server is stopped, so spawn
        // it and handle events on the main task.
        let server_for_events = server.clone();
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                match event {
                    ServerEvent::ConnectionEstablished { session_id, .. } => {
                        say!("New connection: {session_id}");
                    }
                    ServerEvent::MessageReceived { session_id, context } => {
                        // Echo the message back - protocol transparent.
                        let response = format!("Echo: {}", String::from_utf8_lossy(&context.data));
                        let _ = server_for_events.send(session_id, response.as_bytes()).await;
                    }
                    ServerEvent::ConnectionClosed { session_id, .. } => {
                        say!("Connection closed: {session_id}");
                    }
                    _ => {}
                }
            }
        });

        server.serve().await?;
        Ok(())
    }
}

/// examples/echo_server.rs (its event loop, the passive echo branch).
#[allow(unused_must_use)]
mod echo_server {
    use msgtrans::{
        event::ServerEvent, packet::Packet, protocol::TcpServerConfig, protocol::WebSocketServerConfig,
        transport::TransportServerBuilder,
    };

    const BIZ_DROP: u8 = 250;

    pub async fn main(tcp: &str, ws: &str) -> Result<(), Box<dyn std::error::Error>> {
        let tcp_config = TcpServerConfig::new(tcp)?;
        let ws_config = WebSocketServerConfig::new(ws)?;

        let transport = TransportServerBuilder::new()
            .max_connections(64)
            .with_protocol(tcp_config)
            .with_protocol(ws_config)
            .build()
            .await?;

        let mut events = transport.subscribe_events();
        let transport_for_echo = transport.clone();
        let transport_for_serve = transport.clone();

        tokio::spawn(async move {
            let transport = transport_for_echo;
            while let Ok(event) = events.recv().await {
                match event {
                    ServerEvent::MessageReceived { session_id, context } => {
                        let biz_type = context.biz_type;
                        let payload = context.data.clone();
                        let is_request = context.is_request();

                        if biz_type == BIZ_DROP {
                            continue;
                        }

                        if is_request {
                            context.respond(payload);
                        } else {
                            let transport_clone = transport.clone();
                            tokio::spawn(async move {
                                let mut packet = Packet::one_way(0, payload);
                                packet.set_biz_type(biz_type);
                                let _ = transport_clone.send_to_session(session_id, packet).await;
                            });
                        }
                    }
                    ServerEvent::ServerStarted { address } => {
                        say!("[START] Server start notification: {}", address);
                    }
                    _ => {}
                }
            }
        });

        transport_for_serve.serve().await?;
        Ok(())
    }
}

/// README, "Create a Client Connection", with the events read before it
/// returns (the README spawns the reader and returns at once).
mod readme_client {
    use msgtrans::{event::ClientEvent, protocol::TcpClientConfig, transport::TransportClientBuilder};
    use std::time::Duration;

    pub async fn main(tcp: &str) -> Result<(), Box<dyn std::error::Error>> {
        let tcp_config = TcpClientConfig::new(tcp)?.with_connect_timeout(Duration::from_secs(30));

        let mut client = TransportClientBuilder::new().with_protocol(tcp_config).build().await?;

        client.connect().await?;

        // Send a one-way message.
        client.send("Hello, MsgTrans!".as_bytes()).await?;
        say!("Message sent");

        // Send a request and wait for the response.
        let result = client.request("What time is it?".as_bytes()).await?;
        if let Some(data) = result.data {
            say!("Received response: {}", String::from_utf8_lossy(&data));
        } else {
            say!("Request timed out");
        }

        // Consume events.
        let mut events = client.subscribe_events();
        let reader = tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                match event {
                    ClientEvent::MessageReceived(context) => {
                        say!("Received: {}", String::from_utf8_lossy(&context.data));
                        break;
                    }
                    ClientEvent::Disconnected { .. } => break,
                    _ => {}
                }
            }
        });
        let _ = reader.await;

        Ok(())
    }
}

/// examples/echo_client_websocket.rs's shape over `ws://`: exhaustive match
/// over every 1.0 `ClientEvent` variant.
mod ws_client {
    use msgtrans::{event::ClientEvent, protocol::WebSocketClientConfig, transport::client::TransportClientBuilder};
    use std::time::Duration;

    pub async fn main(url: &str) -> Result<(), Box<dyn std::error::Error>> {
        let ws_config = WebSocketClientConfig::new(url)?.with_connect_timeout(Duration::from_secs(5));
        let mut transport = TransportClientBuilder::new().with_protocol(ws_config).build().await?;
        transport.connect().await?;
        let mut event_stream = transport.subscribe_events();

        let result1 = transport.send("Hello from WebSocket client!".as_bytes()).await?;
        say!("ws sent (ID: {})", result1.message_id);

        match transport.request("What time is it?".as_bytes()).await {
            Ok(result) => {
                if let Some(response_data) = &result.data {
                    say!("ws response: {}", String::from_utf8_lossy(response_data));
                } else {
                    say!("ws request result has no data");
                }
            }
            Err(e) => say!("ws request failed: {:?}", e),
        }

        while let Ok(event) = event_stream.recv().await {
            match event {
                ClientEvent::Connected { info } => say!("ws connected: {}", info.peer_addr),
                ClientEvent::MessageReceived(context) => {
                    say!("ws echo: {}", context.as_text_lossy());
                    break;
                }
                ClientEvent::MessageSent { message_id } => say!("ws sent {message_id}"),
                ClientEvent::Disconnected { reason } => {
                    say!("ws disconnected: {:?}", reason);
                    break;
                }
                ClientEvent::Error { error } => {
                    say!("ws error: {:?}", error);
                    break;
                }
            }
        }
        transport.disconnect().await?;
        Ok(())
    }
}

async fn wait_listening(addr: SocketAddr) {
    within(GUARD, "server listening", async {
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_server_echoes_one_way_messages_to_the_readme_client() {
    let (tcp, ws) = (free_addr(), free_addr());
    let quic = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let server = tokio::spawn(async move {
        readme_server::main(&tcp.to_string(), &ws.to_string(), &quic.to_string())
            .await
            .map_err(|e| e.to_string())
    });
    wait_listening(tcp).await;
    // The README server answers requests with a one-way "Echo: ..." rather
    // than a response, so the README client's request is answered by the
    // echo_server program instead (below); here the one-way echo is checked
    // with clients that only send, over TCP and over QUIC.
    let quic_client = msgtrans::protocol::QuicClientConfig::new(&quic.to_string())
        .unwrap()
        .danger_skip_verification();
    for target in [
        msgtrans::transport::TransportClientBuilder::new()
            .with_protocol(msgtrans::protocol::TcpClientConfig::new(&tcp.to_string()).unwrap()),
        msgtrans::transport::TransportClientBuilder::new().with_protocol(quic_client),
    ] {
        let mut c = target.build().await.unwrap();
        within(GUARD, "connect", c.connect()).await.unwrap();
        let mut events = c.subscribe_events();
        c.send(b"readme").await.unwrap();
        let echoed = within(GUARD, "echo", async {
            loop {
                if let Ok(msgtrans::ClientEvent::MessageReceived(ctx)) = events.recv().await {
                    return ctx.as_text_lossy();
                }
            }
        })
        .await;
        assert_eq!(echoed, "Echo: readme");
        c.stop().await;
    }
    assert!(!server.is_finished(), "serve() returned early: {:?}", server.await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_client_and_the_1_0_echo_client_run_against_the_echo_server() {
    let (tcp, ws) = (free_addr(), free_addr());
    let server = tokio::spawn(async move {
        echo_server::main(&tcp.to_string(), &ws.to_string())
            .await
            .map_err(|e| e.to_string())
    });
    wait_listening(tcp).await;
    wait_listening(ws).await;
    within(GUARD, "readme client", readme_client::main(&tcp.to_string()))
        .await
        .expect("readme client");
    assert_eq!(said("Received response: "), ["Received response: What time is it?"]);
    assert_eq!(said("Received: "), ["Received: Hello, MsgTrans!"]);
    within(GUARD, "ws client", ws_client::main(&format!("ws://{ws}/")))
        .await
        .expect("ws client");
    assert_eq!(said("ws response: "), ["ws response: What time is it?"]);
    assert_eq!(said("ws echo: "), ["ws echo: Hello from WebSocket client!"]);
    assert!(
        said("[START] Server start notification: ").len() >= 2,
        "one per listener"
    );
    assert!(!server.is_finished(), "serve() returned early: {:?}", server.await);
}
