//! A server-streaming gRPC reply fed by one task, for the plugins' bidirectional RPCs (the NodeAttestors'
//! attestation exchanges): the task sends messages in order, and a failure ends the stream with the one status
//! its error type converts to.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::Status;

/// The reply stream tonic takes.
pub type Outbound<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The peer is gone: it closed the stream before reading what was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// The sending half handed to the task.
#[derive(Debug)]
pub struct Sender<T>(mpsc::Sender<Result<T, Status>>);

impl<T> Sender<T> {
    /// Sends one message, waiting while the peer has not read the ones before.
    pub async fn send(&self, message: T) -> Result<(), Closed> {
        self.0.send(Ok(message)).await.map_err(|_| Closed)
    }
}

/// Spawns `exchange` with the stream's sender and returns the stream. When `exchange` fails, its error becomes the
/// stream's last item, through the error type's one conversion to a status.
pub fn spawn_exchange<T, E, F, Fut>(exchange: F) -> Outbound<T>
where
    T: Send + 'static,
    E: Into<Status> + Send,
    F: FnOnce(Sender<T>) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
{
    // Two messages at most in flight: each side of an attestation waits for the other's answer anyway.
    let (tx, rx) = mpsc::channel(2);
    let run = exchange(Sender(tx.clone()));
    tokio::spawn(async move {
        if let Err(failure) = run.await {
            let _ = tx.send(Err(failure.into())).await;
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn messages_arrive_in_order_and_a_failure_is_the_last_item() {
        let ok: Outbound<u32> = spawn_exchange(|tx| async move {
            tx.send(1).await.map_err(|_| Status::cancelled("closed"))?;
            tx.send(2).await.map_err(|_| Status::cancelled("closed"))?;
            Ok::<(), Status>(())
        });
        let got: Vec<_> = ok.collect().await;
        assert_eq!(got.iter().map(|r| *r.as_ref().unwrap()).collect::<Vec<_>>(), [1, 2]);
        let failing: Outbound<u32> = spawn_exchange(|tx| async move {
            tx.send(1).await.map_err(|_| Status::cancelled("closed"))?;
            Err(Status::invalid_argument("refused"))
        });
        let got: Vec<_> = failing.collect().await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].as_ref().unwrap_err().message(), "refused");
    }

    #[tokio::test]
    async fn a_closed_peer_is_reported_to_the_task() {
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
        let stream: Outbound<u32> = spawn_exchange(|tx| async move {
            let mut result = Ok(());
            for i in 0..10 {
                result = tx.send(i).await;
                if result.is_err() {
                    break;
                }
            }
            let _ = seen_tx.send(result);
            Ok::<(), Status>(())
        });
        drop(stream);
        assert_eq!(seen_rx.await.unwrap(), Err(Closed));
    }
}
