# Windows quick start: what `make run`, `make test` and `make demo` do on Linux and macOS (Windows has no make).
#
#   .\start.ps1          create .venv, install b24bridge, serve on http://127.0.0.1:8000
#   .\start.ps1 test     the same .venv, then ruff, import-linter, mypy and pytest
#   .\start.ps1 demo     the same .venv, then `b24bridge demo`
#
# start.bat runs this script from cmd.exe, or where running scripts is disabled (execution policy).
param(
    [ValidateSet("run", "test", "demo")]
    [string]$Task = "run"
)
$ErrorActionPreference = "Stop"
Set-Location $PSScriptRoot

$Bin = Join-Path $PSScriptRoot ".venv\Scripts"
$Stamp = Join-Path $PSScriptRoot ".venv\.installed"

# A native command's failure does not stop PowerShell: stop at the first one, with its exit code.
function Invoke-Checked([string]$Command, [string[]]$Arguments = @()) {
    & $Command @Arguments
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
}

# The virtual environment, and the project installed into it again whenever pyproject.toml is newer (as `make venv`).
if (-not (Test-Path (Join-Path $Bin "python.exe"))) {
    if (Get-Command py -ErrorAction SilentlyContinue) {
        Invoke-Checked py @("-3", "-m", "venv", ".venv")   # the launcher picks the newest Python 3 (3.11+ needed)
    } else {
        Invoke-Checked python @("-m", "venv", ".venv")
    }
}
if (-not (Test-Path $Stamp) -or (Get-Item "pyproject.toml").LastWriteTime -gt (Get-Item $Stamp).LastWriteTime) {
    Invoke-Checked (Join-Path $Bin "python.exe") @("-m", "pip", "install", "--quiet", "-e", ".[dev]")
    New-Item -ItemType File -Force $Stamp | Out-Null
}

switch ($Task) {
    "run" { Invoke-Checked (Join-Path $Bin "b24bridge.exe") @("serve") }
    "demo" { Invoke-Checked (Join-Path $Bin "b24bridge.exe") @("demo") }
    "test" {
        $Paths = @("src", "tests", "bench")
        Invoke-Checked (Join-Path $Bin "ruff.exe") (@("check") + $Paths)
        Invoke-Checked (Join-Path $Bin "ruff.exe") (@("format", "--check") + $Paths)
        Invoke-Checked (Join-Path $Bin "lint-imports.exe")
        Invoke-Checked (Join-Path $Bin "mypy.exe")
        Invoke-Checked (Join-Path $Bin "pytest.exe")
    }
}
