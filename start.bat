@echo off
rem Windows quick start from cmd.exe: runs start.ps1 (see there), whatever the script execution policy says.
rem   start.bat          create .venv, install b24bridge, serve on http://127.0.0.1:8000
rem   start.bat test     ruff, import-linter, mypy and pytest
rem   start.bat demo     b24bridge demo
powershell -NoProfile -ExecutionPolicy Bypass -File "%~dp0start.ps1" %*
exit /b %ERRORLEVEL%
