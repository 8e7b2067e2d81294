//! llama.cpp (`llama-cpp-python`) as a timed peer for `sift bench`: one
//! Python process holds the model, and each prefill or decode is timed when
//! asked, so sift's and llama.cpp's measurements alternate in one run.

use anyhow::{Context, Result};
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};

pub struct LlamaCpp {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: ChildStderr,
    pub threads: usize,
}

impl LlamaCpp {
    /// Loads `model` in a Python process with `threads` CPU threads and a
    /// context of `n_ctx` tokens.
    pub fn start(model: &Path, threads: usize, n_ctx: usize) -> Result<LlamaCpp> {
        let mut child = Command::new("python3")
            .args(["-c", include_str!("llama_cpp_bench.py")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running python3")?;
        let (stdin, stdout, stderr) = (child.stdin.take().unwrap(), BufReader::new(child.stdout.take().unwrap()), child.stderr.take().unwrap());
        let mut peer = LlamaCpp { child, stdin, stdout, stderr, threads };
        peer.request(&json!({"model": model, "threads": threads, "n_ctx": n_ctx}))?;
        Ok(peer)
    }

    /// Seconds llama.cpp takes to prefill `tokens` from an empty cache.
    pub fn prefill_seconds(&mut self, tokens: &[u32]) -> Result<f64> {
        self.seconds(&json!({"prefill": tokens}))
    }

    /// Seconds of `steps` greedy decode steps after `prompt`.
    pub fn decode_seconds(&mut self, prompt: &[u32], steps: usize) -> Result<f64> {
        self.seconds(&json!({"decode_prompt": prompt, "decode_steps": steps}))
    }

    fn seconds(&mut self, request: &serde_json::Value) -> Result<f64> {
        let reply = self.request(request)?;
        reply["seconds"].as_f64().context("llama.cpp bench reply without seconds")
    }

    /// One request line, one reply line; a dead process is reported with
    /// the last line it wrote to stderr.
    fn request(&mut self, request: &serde_json::Value) -> Result<serde_json::Value> {
        let sent = writeln!(self.stdin, "{request}").and_then(|_| self.stdin.flush());
        let mut line = String::new();
        let read = sent.is_ok() && self.stdout.read_line(&mut line).map(|n| n > 0).unwrap_or(false);
        if !read {
            let _ = self.child.kill();
            let status = self.child.wait()?;
            let mut err = String::new();
            let _ = self.stderr.read_to_string(&mut err);
            // A crash (a wheel built for another CPU) leaves no message: name the exit status.
            let last = err.lines().last().map(str::to_string).unwrap_or_else(|| format!("python3 exited with {status}"));
            anyhow::bail!("llama-cpp-python not usable ({last})");
        }
        serde_json::from_str(&line).context("llama.cpp bench output")
    }
}

impl Drop for LlamaCpp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
