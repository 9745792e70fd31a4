-- minidelta: Delta's nccl module, which NCSA's multi-node PyTorch example loads: "the nccl built
-- with the AWS nccl plugin for Slingshot11" (NCSA Delta_doc running_jobs.rst, 'PyTorch
-- Multi-Node'). There is no Slingshot (nor NCCL: jobs use gloo on the CPU) here, so it only names
-- the plugin in MINIDELTA_NCCL_PLUGIN, which no NCCL reads: scripts that load it run unchanged.
-- Delta's version is not in its docs, so this one has none.
whatis("Name: nccl")
whatis("Description: minidelta stand-in for Delta's NCCL with the AWS OFI plugin for Slingshot 11")
help([[minidelta stand-in for Delta's nccl module: sets MINIDELTA_NCCL_PLUGIN only (no Slingshot here).]])
setenv("MINIDELTA_NCCL_PLUGIN", "aws-ofi-nccl (Delta's Slingshot 11 plugin; none here)")
