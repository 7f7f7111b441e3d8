//! The WebSocket client to the signal server: text frames in and out. The peer core
//! parses and writes the messages; this only moves them.

use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::NativeError;

/// Sends text frames; dropping it closes the connection once what was sent is written.
pub type SignalSender = mpsc::UnboundedSender<String>;

/// Connects and returns a sender and the stream of text frames from the server. The
/// receiver yields `None` when the server goes away.
pub async fn connect(
    url: String,
) -> Result<(SignalSender, mpsc::UnboundedReceiver<String>), NativeError> {
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .map_err(|e| NativeError::Signal {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
    let (in_tx, in_rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(text) = out_rx.recv().await {
            if sink.send(Message::text(text)).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    tokio::spawn(async move {
        while let Some(frame) = stream.next().await {
            match frame {
                Ok(Message::Text(text)) => {
                    if in_tx.send(text.as_str().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    });
    Ok((out_tx, in_rx))
}
