//! The WebSocket client to the signal server: typed messages in, typed messages out.

use futures::{SinkExt, StreamExt};
use protocol::{ClientMessage, ServerMessage};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::NativeError;

/// Sends client messages; dropping every clone closes the connection.
pub type SignalSender = mpsc::UnboundedSender<ClientMessage>;

/// Connects and returns a sender and the stream of server messages. The receiver yields
/// `None` when the server goes away.
pub async fn connect(
    url: &str,
) -> Result<(SignalSender, mpsc::UnboundedReceiver<ServerMessage>), NativeError> {
    let signal_error = |reason: String| NativeError::Signal {
        url: url.to_owned(),
        reason,
    };
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| signal_error(e.to_string()))?;
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<ClientMessage>();
    let (in_tx, in_rx) = mpsc::unbounded_channel::<ServerMessage>();
    tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            if sink.send(Message::text(message.to_json())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    tokio::spawn(async move {
        while let Some(frame) = stream.next().await {
            let text = match frame {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            match ServerMessage::from_json(&text) {
                Ok(message) => {
                    if in_tx.send(message).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a malformed message from the signal server")
                }
            }
        }
    });
    Ok((out_tx, in_rx))
}
