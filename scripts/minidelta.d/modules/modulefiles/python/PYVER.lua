-- minidelta: Delta's plain `python` module (python/3.12.1 there: NCSA Delta_doc software.rst,
-- 'Python'). Here it is a venv with the standard library only, on the base interpreter of the
-- venv deltajobs runs in; scripts/minidelta installs this file as python/<that version>.lua and
-- builds the env (scripts/minidelta.d/module_env.py --bare). Its python puts itself first on
-- PATH and has neither deltajobs nor submitit, as on Delta.
local root = myFileName():match("^(.*)/modulefiles/")
local prefix = pathJoin(root, "envs", "python")
whatis("Name: python")
whatis("Version: " .. myModuleVersion())
whatis("Description: minidelta stand-in for Delta's python module: Python alone, first on PATH")
help([[minidelta: Python ]] .. myModuleVersion() .. [[ alone (a venv at ]] .. prefix .. [[), first on PATH.]])
prepend_path("PATH", pathJoin(prefix, "bin"))
