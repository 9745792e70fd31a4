-- minidelta: the course's PyTorch module (its slide: `module purge; module reset; module load
-- pytorch-conda/2.8`, as clusters/delta.yaml notes; NCSA's Delta_doc does not name it). Like
-- Delta's, it puts its own Python environment first on PATH: a `python` with torch (CPU jobs here)
-- but without deltajobs or submitit, which live in the venv that submitted the job. A script that
-- runs `python -m submitit...` after loading it fails with ModuleNotFoundError, as on Delta.
-- The env links the packages of deltajobs' venv (scripts/minidelta.d/module_env.py --linked).
local root = myFileName():match("^(.*)/modulefiles/")
local prefix = pathJoin(root, "envs", "pytorch-conda-2.8")
whatis("Name: pytorch-conda")
whatis("Version: 2.8")
whatis("Description: minidelta stand-in: a Python environment with PyTorch, first on PATH")
help([[minidelta: a Python environment with PyTorch (]] .. prefix .. [[), first on PATH;
it has neither deltajobs nor submitit.]])
prepend_path("PATH", pathJoin(prefix, "bin"))
