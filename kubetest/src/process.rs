//! A child process that cannot outlive the test binary.
//!
//! Dropping a [`Process`] kills and reaps it. That covers a control plane
//! owned by a test, but not one kept in a `static` (statics are never
//! dropped), nor a test binary that is itself killed. So every child is
//! started with `PR_SET_PDEATHSIG = SIGKILL`: the kernel kills it when the
//! thread that forked it ends. The parent-death signal follows the *thread*,
//! not the process, and test threads end all the time; so all children are
//! forked by one spawner thread that lives as long as the test binary.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;

use crate::Error;

type SpawnRequest = (Command, mpsc::SyncSender<std::io::Result<Child>>);

/// A running program whose stdout and stderr go to a log file.
#[derive(Debug)]
pub(crate) struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `program` with `args`, logging to `log`.
    pub(crate) fn start(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: PathBuf,
    ) -> Result<Process, Error> {
        let file = File::create(&log).map_err(Error::io(format!("create {}", log.display())))?;
        let stderr = file
            .try_clone()
            .map_err(Error::io(format!("reopen {}", log.display())))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr);
        // SAFETY: between fork and exec only prctl(2) runs, which is
        // async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = spawn_from_long_lived_thread(command)
            .map_err(Error::io(format!("start {}", program.display())))?;
        Ok(Process { name, child, log })
    }

    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// `Err(Exited)` with the end of the log if the process has exited.
    pub(crate) fn check_running(&mut self) -> Result<(), Error> {
        let status = self
            .child
            .try_wait()
            .map_err(Error::io(format!("wait for {}", self.name)))?;
        match status {
            None => Ok(()),
            Some(status) => Err(self.exited(status)),
        }
    }

    fn exited(&self, status: ExitStatus) -> Error {
        Error::Exited {
            process: self.name,
            status,
            log: self.log.clone(),
            tail: log_tail(&self.log),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Kill fails only if the child was already reaped; either way it is
        // gone once wait returns, and a destructor has no one to tell.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_from_long_lived_thread(command: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("controlplane-spawner".into())
            .spawn(move || {
                // The sender lives in a static, so this loop (and the thread
                // the children's parent-death signal watches) never ends.
                for (mut command, reply) in incoming {
                    // The requester waits on the reply; it cannot be gone.
                    let _ = reply.send(command.spawn());
                }
            })
            .map(drop)
            .unwrap_or_else(|e| panic!("cannot start the control-plane spawner thread: {e}"));
        requests
    });
    let (reply, answer) = mpsc::sync_channel(1);
    spawner
        .send((command, reply))
        .map_err(|_| std::io::Error::other("the control-plane spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("the control-plane spawner thread is gone"))?
}

/// The last lines of a log, for error messages.
pub(crate) fn log_tail(log: &Path) -> String {
    const LINES: usize = 40;
    match std::fs::read_to_string(log) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LINES)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", log.display()),
    }
}
