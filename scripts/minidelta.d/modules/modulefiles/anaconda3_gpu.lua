-- minidelta: Delta's anaconda3_gpu, "GPU versions of anaconda3 ... installed PyTorch and
-- TensorFlow CUDA aware python modules" (NCSA Delta_doc software.rst, 'anaconda3_gpu (for CUDA)').
-- Here: a Python environment with PyTorch (no TensorFlow), first on PATH, without deltajobs or
-- submitit (scripts/minidelta.d/module_env.py --linked). Delta's version is not in its docs, so
-- this one has none. Like Delta's, it warns when loaded inside a conda environment (software.rst,
-- 'Recent Changes').
local root = myFileName():match("^(.*)/modulefiles/")
local prefix = pathJoin(root, "envs", "anaconda3_gpu")
whatis("Name: anaconda3_gpu")
whatis("Description: minidelta stand-in: a Python environment with PyTorch, first on PATH")
help([[minidelta: a Python environment with PyTorch (]] .. prefix .. [[), first on PATH;
it has neither deltajobs nor submitit.]])
local conda = os.getenv("CONDA_PREFIX")
if mode() == "load" and conda and conda ~= "" then
    LmodMessage("A conda environment has been detected CONDA_PREFIX=\n" .. conda ..
        "\nanaconda3_gpu is loaded. Consider running conda deactivate and reloading it.")
end
prepend_path("PATH", pathJoin(prefix, "bin"))
