"""deltajobs from a laptop: every command forwarded to a login node's own deltajobs over OpenSSH.

- `records.py`: the remotes in the user config (`remotes:` and the `remote:` default) and which one
  a command line names (`--remote NAME`, DELTAJOBS_REMOTE, `remote:`).
- `ssh.py`: the OpenSSH seam: argv lists, one ControlMaster socket per remote in a private
  directory (one authentication, one Duo prompt, per ControlPersist period), ssh's failures in words.
- `sync.py`: rsync of the files a command names (a script's repository or directory, as the submit
  snapshot sees it) into a mirror under the remote's workdir, and of a run directory back.
- `argv.py`: what a command line needs done here (files to send, --plot, --checkpoints), pure.
- `dispatch.py`: runs the remote's deltajobs with the same arguments and streams its stdout, stderr
  and exit code back unchanged; `results.py`: the local mirror of a run and --plot; `tunnel.py`:
  `tensorboard` through the control socket; `session.py`: the sh one-liner they run there and how its
  output reads here.
- `install.py`: `deltajobs remote setup` (a wheel of this version, a venv over the module's python).

On the laptop it runs no SLURM command and imports no torch; beside this package it uses
`spec.settings` (the user config), `payloads.snapshot` (what travels), `watch.tbproxy` (the loopback
address) and `backends.probe` (Lmod's set-up line for `remote setup`).
May import sweep and every package below it; never the CLI.
"""
