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

#[tokio::test]
async fn pages_of_rows_wider_than_planned_are_cut_to_the_text_a_page_may_hold() {
    use crate::fake::{name, MemRows};
    use runtime::domain::Scan;
    use std::sync::Arc;
    // 40 rows of 1 MiB each, planned 20 a page (as for a table without statistics): the
    // first page holds what was planned, the ones after it what fits PAGE_BYTES.
    let wide = "x".repeat(1 << 20);
    let keys: Vec<String> = (1..=40).map(|k| k.to_string()).collect();
    let rows: Vec<[Option<&str>; 2]> =
        keys.iter().map(|k| [Some(k.as_str()), Some(wide.as_str())]).collect();
    let rows: Vec<&[Option<&str>]> = rows.iter().map(|r| &r[..]).collect();
    let source = Arc::new(MemRows::default().with("docs", &["id", "body"], &rows));
    let scan = Scan::plain(name("docs"), vec!["id".into(), "body".into()], vec!["id".into()]);
    let (mut pages, _reader) = super::read_ahead(source, scan, 20);
    let mut sizes = Vec::new();
    while let Some(page) = pages.recv().await {
        sizes.push(page.unwrap().len());
    }
    assert_eq!(sizes, [20, 7, 7, 6], "every row once, in pages of at most 8 MiB");
}

#[test]
fn a_page_is_planned_at_most_its_rows_and_at_least_one() {
    use super::page_rows;
    assert_eq!(page_rows(20_000, 20_000, 2_000_000), 20_000, "narrow rows: as planned");
    assert_eq!(page_rows(20_000, 0, 0), 20_000, "nothing read yet: as planned");
    assert_eq!(page_rows(500, 500, 500 << 20), 8, "rows of a MiB: eight a page");
    assert_eq!(page_rows(500, 1, 64 << 20), 1, "a row wider than a page: one a page");
}
