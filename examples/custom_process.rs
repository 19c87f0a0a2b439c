//! A custom process type: the notes' "subclass Process and override run()".
//! Any type implementing `Runnable` can be started as a child process.
//!
//! Run: `cargo run --example custom_process`

use std::sync::Arc;

use moss::pool::{ProcessQueue, Runnable};

struct Downloader {
    name: String,
    urls: Vec<&'static str>,
    results: Arc<ProcessQueue<(String, usize)>>,
}

impl Runnable for Downloader {
    fn run(self) {
        // Pretend to download: report each URL's length, from the child.
        for url in self.urls {
            self.results.put((
                format!("{} (pid {}) fetched {url}", self.name, std::process::id()),
                url.len(),
            ));
        }
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

fn main() -> std::io::Result<()> {
    let results = Arc::new(ProcessQueue::new(8)?);
    let a = Downloader {
        name: "downloader-a".into(),
        urls: vec!["http://a/1", "http://a/22"],
        results: results.clone(),
    }
    .start()?;
    let b = Downloader {
        name: "downloader-b".into(),
        urls: vec!["http://b/333"],
        results: results.clone(),
    }
    .start()?;
    let mut total = 0;
    for _ in 0..3 {
        let (line, n) = results.get();
        println!("{line}: {n} bytes");
        total += n;
    }
    println!(
        "{} exited with {}, {} exited with {}",
        a.name(),
        a.join()?,
        b.name(),
        b.join()?
    );
    println!("total {total} bytes");
    Ok(())
}
