use super::InPageOrder;
use runtime::error::ToolError;

/// A page's comparison that ends when its sender says so.
async fn page(
    answer: tokio::sync::oneshot::Receiver<Result<u32, ToolError>>,
) -> Result<u32, ToolError> {
    answer.await.map_err(|e| ToolError::system(e.to_string()))?
}

#[tokio::test]
async fn pages_are_answered_in_the_order_they_started_whatever_order_they_finish() {
    let mut compares = InPageOrder::new(2);
    let (first, first_answer) = tokio::sync::oneshot::channel();
    let (second, second_answer) = tokio::sync::oneshot::channel();
    let (third, third_answer) = tokio::sync::oneshot::channel();
    compares.start(page(first_answer));
    assert_eq!(compares.done(false).await, Ok(None), "room for a second page");
    compares.start(page(second_answer));
    // The second page finishes first; the first is still the first answer.
    second.send(Ok(2)).unwrap();
    first.send(Ok(1)).unwrap();
    assert_eq!(compares.done(false).await, Ok(Some(1)), "two running: the oldest is waited for");
    assert_eq!(compares.done(false).await, Ok(None), "room again");
    compares.start(page(third_answer));
    third.send(Ok(3)).unwrap();
    // After the last page, every page still running is answered, in order.
    assert_eq!(compares.done(true).await, Ok(Some(2)));
    assert_eq!(compares.done(true).await, Ok(Some(3)));
    assert_eq!(compares.done(true).await, Ok(None));
}

#[tokio::test]
async fn a_page_that_fails_or_stops_is_an_error_in_its_turn() {
    let mut compares = InPageOrder::new(2);
    let (failing, failing_answer) = tokio::sync::oneshot::channel();
    compares.start(page(failing_answer));
    compares.start(async { panic!("the comparison panicked") });
    failing.send(Err(ToolError::transient("the target went away"))).unwrap();
    assert_eq!(compares.done(true).await, Err(ToolError::transient("the target went away")));
    let stopped = compares.done(true).await.unwrap_err();
    assert!(stopped.message.starts_with("a comparison stopped"), "{stopped}");
}
