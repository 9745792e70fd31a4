-- minidelta: Lmod's site configuration. Lmod runs /etc/lmod/lmod_config.lua, which runs this file,
-- at the start of every `module` command, in jobs and on the login node alike.
--
-- It gives `module reset` Delta's default environment: "module list" there shows gcc/11.4.0,
-- openmpi/4.1.6 and cuda/11.8.0 (NCSA Delta_doc software.rst, 'Modules/Lmod'), which
-- `module reset` loads ("module reset  # load the default Delta modules", same file, 'Batch Jobs').
-- Lmod takes that set from LMOD_SYSTEM_DEFAULT_MODULES alone (without it `module reset` fails), and
-- no process here need carry the variable: where it is empty, it is set here, inside Lmod.
local defaults = "gcc/11.4.0:openmpi/4.1.6:cuda/11.8.0"
if (os.getenv("LMOD_SYSTEM_DEFAULT_MODULES") or "") == "" then
    require("posix").setenv("LMOD_SYSTEM_DEFAULT_MODULES", defaults)
end
