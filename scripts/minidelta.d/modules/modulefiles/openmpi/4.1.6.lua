-- minidelta: a stand-in for Delta's openmpi/4.1.6 (Open), one of the modules of Delta's default
-- environment, which `module reset` restores: "module list" there shows gcc/11.4.0, openmpi/4.1.6
-- and cuda/11.8.0 (NCSA Delta_doc software.rst, 'Modules/Lmod'). The set is
-- LMOD_SYSTEM_DEFAULT_MODULES in ../../etc/lmod_config.lua. It sets nothing (jobs use the system's tools).
whatis("Name: openmpi")
whatis("Version: 4.1.6")
whatis("Description: minidelta stand-in for Delta's openmpi/4.1.6 (a default module); sets nothing")
help([[minidelta stand-in for Delta's openmpi/4.1.6, one of the modules `module reset` loads. It sets nothing.]])
