-- quan.cli: quan's commands, in one table. main.c runs scripts itself,
-- lua.c-style (`quan script.lua`, `quan run script.lua`, -e, -i, -v) and
-- parses the long options that set environment variables (--profile, ...)
-- before the command word; every other command word comes here.
--
--   cli.main(word, argv, banner) -> exit status, or nil when word is no
--       command but names a file (main.c then runs it as a script)
--   cli.COMMANDS                 -> the table below, in `quan help` order
--   cli.find(word)               -> its entry | nil
--   cli.usage(word)              -> the help text of a command (quan.options),
--                                   or of a sub-command ("sandbox redeem")
--   cli.commands_text()          -> the "commands:" part of `quan help`/`--help`
local options = require "quan.options"
local suggest = require "quan.suggest"

local M = {}

-- The command table. Adding a command is one entry here plus its module:
--
--   name     the command word: a plain word (no '.' or '/', which make a
--            script path)
--   summary  one line for `quan help`
--   options, arguments, passthrough, usage, footer: its command line, as
--            quan.options reads it (`quan help NAME` and `quan NAME --help`
--            print it; a usage error exits 2 with it)
--   module   the module that runs it: module.main(opts, arguments) -> exit
--            status (an integer; nothing or true is 0, false is 1), called
--            with the options by key (--ready-file: opts.ready_file) and the
--            words left; or `main`, that function itself
--   banner   true: print quan's version line first (as `quan` alone does)
--   host     true: main.c runs it (`run`); listed here for help only
--   subcommands  entries of the same shape (name, summary, module, options,
--            ...) for `quan NAME WORD ...`: when the first word after the
--            command is one of their names, that entry reads the rest of
--            the line (`quan sandbox redeem --help` is its usage)
--
-- Then list its exit codes in docs/errors.md and describe it in docs/cli.md.
local NOT_USED_BY_CHECK = "accepted as `quan run` takes it; check uses no profile"

M.COMMANDS = {
  {
    name = "run", host = true,
    summary = "run a Lua script, as lua does (`quan script.lua` is the same)",
    usage = "quan run [options] script [args]   ('-' reads the script from stdin)",
    options = false,
    footer = "options: lua's (-e, -l, -i, -v, -E, -W) and quan's (--profile, --config, --verbose,\n"
      .. "--sandbox, --dry-run, --log-format), before or after the word run: 'quan --help' lists them",
  },
  {
    name = "check", module = "quan.check",
    summary = "run a campaign script with sending disabled: validate and list every request",
    arguments = { "script.lua", "[args...]" }, passthrough = true,
    options = {
      { "--now TIME", "check as of TIME: \"YYYY-MM-DD HH:MM\" (Beijing time) or epoch seconds",
        check = function(text) return require("quan.check").parse_now(text) end },
      { "--json", "a campaign file's plan as JSON (docs/campaigns.md)" },
      { "--log-format F", "the log of a batch the script runs", choices = require("quan.batch.progress").FORMATS },
      { "--profile NAME", NOT_USED_BY_CHECK },
      { "--config FILE", NOT_USED_BY_CHECK },
      { "--verbose", NOT_USED_BY_CHECK },
      { "--sandbox", NOT_USED_BY_CHECK },
      { "--dry-run", NOT_USED_BY_CHECK },
    },
  },
  {
    name = "send", module = "quan.send",
    summary = "send one coupon of a stock to every openid of a CSV, exactly once (for cron)",
    arguments = { "STOCK_ID", "USERS.csv", "[JOURNAL]" },
    options = {
      { "--concurrency N", "calls in flight at once (64)", check = options.positive_integer },
      { "--rate N", "calls per second at most, retries included (400)", check = options.positive_number },
      { "--attempts N", "tries per row (and of the stock query) before giving up (6)",
        check = options.positive_integer },
      { "--key COLUMN", "the CSV column that holds the openid (openid)" },
      { "--batch-id ID", "the batch this run is part of: its journal's, or with --continue one begun elsewhere" },
      { "--continue", "--batch-id names a batch begun with another journal: rows count as sent or already held" },
      { "--export FILE", "write every row's outcome as CSV when the run ends" },
      { "--log-format F", "the log: bar on a terminal, else json", choices = require("quan.batch.progress").FORMATS },
      { "--no-preflight", "do not query the stock before sending" },
      { "--profile NAME", "the profile to send with (as quan --profile NAME send)" },
    },
    footer = "JOURNAL defaults to USERS.csv.journal; run the same command again to resume.\n"
      .. "Exit codes, the journal, batch ids and scheduling: docs/batches.md",
  },
  {
    name = "sandbox", module = "quan.sandbox",
    summary = "serve a local emulator of the cash-coupon API on loopback HTTPS",
    usage = "quan sandbox [options]\nquan sandbox clock [--state DIR] [+DURATION | \"YYYY-MM-DD HH:MM\"]",
    arguments = { "[clock]", "[TIME]" },
    options = {
      { "--listen HOST:PORT", "a loopback address and port; port 0 picks a free one", default = "127.0.0.1:0" },
      { "--state DIR", "the state directory (default $QUAN_SANDBOX_STATE, else ~/.local/share/quan/sandbox)" },
      { "--faults SPEC", "faults from the start, e.g. latency=20ms,error429=0.1" },
      { "--key-mode MODE", "the key answers are signed under: the public key, the certificate, or as asked",
        choices = require("quan.sandbox.files").KEY_MODES, default = "public_key" },
      { "--ready-file FILE", "write the base URL to FILE once listening; removed at stop" },
      { "--temporary", "remove the state at stop (only a new, empty --state)" },
    },
    footer = "clock prints or moves a running sandbox's business clock (+2h, +1d12h, or a Beijing time;\n"
      .. "only forward once it holds a stock). docs/sandbox.md describes the state, the faults and the\n"
      .. "control endpoints\n"
      .. "exit status: 0 stopped (SIGINT, SIGTERM), 1 could not start, 2 usage, 130 interrupted before\n"
      .. "it served; clock: 0 printed or moved, 1 no sandbox serves the state or it refused the time",
    subcommands = {
      {
        name = "redeem", module = "quan.sandbox.redeem",
        summary = "redeem a share of a stock's sent coupons over business time, as payments would",
        arguments = { "STOCK_ID" },
        options = {
          { "--share X", "that share of the stock's unused coupons (above 0, at most 1)",
            check = function(text) return require("quan.sandbox.redeem").share(text) end },
          { "--count N", "that many of them", check = require("quan.options").positive_integer },
          { "--over DURATION", "spread over the next DURATION of the business clock (90s, 30m, 2h, 1d12h; at most 90d)",
            check = function(text) return require("quan.sandbox.redeem").duration(text) end },
          { "--refunds N", "refund that many of them (in the refund-flow file only)",
            check = function(text) return require("quan.sandbox.redeem").count(text) end },
          { "--seed N", "draw everything from seed N (default 1): the same seed, the same redemptions",
            check = function(text) return require("quan.sandbox.redeem").count(text) end },
          { "--ca-file FILE", "the CA the callback URL's certificate is checked with (default the sandbox's)" },
          { "--state DIR", "the state directory of the running sandbox (default as for quan sandbox)" },
          { "--json", "print the sandbox's answer, every redemption, as JSON" },
        },
        footer = "exit status: 0 scheduled, 1 no sandbox serves DIR or it refused, 2 usage (docs/sandbox.md)",
      },
    },
  },
  {
    name = "plan", module = "quan.campaign.plan",
    summary = "show what apply would do to make a campaign file so (reads only)",
    arguments = { "CAMPAIGN.lua" },
    options = {
      { "--state PATH", "the campaign's state (default CAMPAIGN.lua.state)" },
      { "--json", "the plan as JSON, for tools" },
      { "--now TIME", "judge times as of TIME: \"YYYY-MM-DD HH:MM\" (Beijing time) or epoch seconds",
        check = function(text) return require("quan.check").parse_now(text) end },
      { "--profile NAME", "the profile of the config file (also before the word plan)" },
    },
    footer = "exit status: 0 nothing to do, 3 changes pending, 1 errors, 2 usage (docs/campaigns.md)",
  },
  {
    name = "apply", module = "quan.campaign.apply",
    summary = "make a campaign file so: create, start, pause, restart; again any number of times",
    arguments = { "CAMPAIGN.lua" },
    options = {
      { "--yes", "apply without asking (cron, scripts; needed when stdin is not a terminal)" },
      { "--dry-run", "read what exists, print every write request as it would go out, send none" },
      { "--state PATH", "the campaign's state (default CAMPAIGN.lua.state)" },
      { "--profile NAME", "the profile of the config file (also before the word apply)" },
    },
    footer = "exit status: 0 done or nothing to do, 1 a step failed or errors, 2 usage, 6 another apply\n"
      .. "holds the state; once the campaign's sends ran, the worst of their codes (those of quan send)\n"
      .. "(docs/campaigns.md)",
  },
  {
    name = "serve", module = "quan.serve",
    summary = "receive WeChat Pay's notifications: verify, store each event once, run the handler",
    arguments = { "[CAMPAIGN.lua]" },
    options = {
      { "--listen HOST:PORT", "the address to listen on: loopback, behind a reverse proxy (port 0 picks a free one)",
        default = "127.0.0.1:8080" },
      { "--allow-remote", "let --listen name an address other than loopback" },
      { "--tls-cert FILE", "serve HTTPS with this certificate chain (PEM), with --tls-key" },
      { "--tls-key FILE", "the private key of --tls-cert (PEM)" },
      { "--store PATH", "the event store (default CAMPAIGN.lua.events)" },
      { "--handler FILE", "a Lua script returning function(event): the handler, without a campaign file" },
      { "--state PATH", "the campaign's state, where the store is recorded (default CAMPAIGN.lua.state)" },
      { "--profile NAME", "the profile whose keys verify and decrypt (also before the word serve)" },
      { "--workers N", "threads answering notifications (default 8, at most 1024)", check = function(text)
        local n, why = options.positive_integer(text)
        if n and n > 1024 then return nil, "wants at most 1024 threads" end -- quan.server's limit
        return n, why
      end },
      { "--retry-max SECONDS", "the longest wait between calls of a failing handler (default 300)",
        check = options.positive_number },
      { "--handler-timeout SECONDS", "a handler call running longer fails, to be called again (default 50)",
        check = options.positive_number },
      { "--ready-file FILE", "write the receiver's URL to FILE once listening; removed at stop" },
    },
    footer = "exit status: 0 stopped (SIGTERM, SIGINT), 1 could not start, 2 usage, 6 another receiver holds\n"
      .. "the store (docs/notifications.md)",
    subcommands = {
      {
        name = "list", main = function(o, a) return require("quan.serve").list(o, a) end,
        summary = "the stored events not handled yet (--all: every one), with their last failure",
        arguments = { "[CAMPAIGN.lua]" },
        options = {
          { "--store PATH", "the event store (default CAMPAIGN.lua.events)" },
          { "--all", "every event, handled or not" },
          { "--json", "one JSON object per event" },
        },
        footer = "exit status: 0 listed, 1 no such store, 2 usage (docs/notifications.md)",
      },
      {
        name = "replay", main = function(o, a) return require("quan.serve").replay(o, a) end,
        summary = "make the pending events, or those named, due for the handler now",
        arguments = { "[CAMPAIGN.lua]", "[EVENT_ID...]" },
        options = {
          { "--store PATH", "the event store (default CAMPAIGN.lua.events)" },
        },
        footer = "exit status: 0 replayed, 1 no such store or event, 2 usage (docs/notifications.md)",
      },
    },
  },
  {
    name = "report", module = "quan.report",
    summary = "how a campaign is doing: sent, used, refunded, spend, per day and merchant (table, JSON, page)",
    arguments = { "CAMPAIGN.lua | STATE | STOCK_ID..." },
    options = {
      { "--state PATH", "the campaign's state (default CAMPAIGN.lua.state)" },
      { "--journal PATHS", "more batch journals to count (comma-separated): sends made outside the campaign" },
      { "--store PATH", "the notification receiver's store (default: the one the state records)" },
      { "--json", "the figures as JSON, for tools" },
      { "--html FILE", "write a self-contained page with charts to FILE" },
      { "--now TIME", "the time of the pace and run-out: \"YYYY-MM-DD HH:MM\" (Beijing time) or epoch seconds",
        check = function(text) return require("quan.check").parse_now(text) end },
      { "--offline", "read no API: the journals and the store only" },
      { "--profile NAME", "the profile of the config file (also before the word report)" },
    },
    footer = "exit status: 0 made from every source, 1 a source could not be read (what could be is still\n"
      .. "reported) or nothing to report, 2 usage (docs/report.md)",
  },
  {
    name = "repl", module = "quan.repl", banner = true,
    summary = "the interactive loop (what `quan` alone starts on a terminal)",
    usage = "quan [--profile NAME] [--config FILE] [--sandbox] [--verbose] repl",
  },
  {
    name = "help", -- main: below, once the table is there
    summary = "list the commands, or show one command's usage",
    arguments = { "[COMMAND]" },
  },
}

local by_name = {}
for _, entry in ipairs(M.COMMANDS) do
  entry.program = "quan " .. entry.name
  by_name[entry.name] = entry
  for _, sub in ipairs(entry.subcommands or {}) do sub.program = entry.program .. " " .. sub.name end
end

-- subcommand(entry, word) -> the sub-command `word` of a command's entry | nil
local function subcommand(entry, word)
  for _, sub in ipairs(entry.subcommands or {}) do
    if sub.name == word then return sub end
  end
end

-- find(word) -> the command's entry | nil
function M.find(word)
  return by_name[word]
end

-- usage(word) -> the help text of command `word` (or "word sub", a
-- sub-command's)
function M.usage(word)
  local name, sub = word:match("^(%S+) (%S+)$")
  if name then return options.usage(assert(subcommand(assert(by_name[name], name), sub), word)) end
  local entry = assert(by_name[word], word)
  if entry.options == false then -- the host's options: described by the footer
    return ("usage: %s\n%s\n%s\n"):format(entry.usage, entry.summary, entry.footer)
  end
  return options.usage(entry)
end

-- commands_text() -> "commands:" and one line per command, and where to
-- read more; main.c prints it at the end of `quan --help`
function M.commands_text()
  local width = 0
  for _, entry in ipairs(M.COMMANDS) do width = math.max(width, #entry.name) end
  local out = { "commands:" }
  for _, entry in ipairs(M.COMMANDS) do
    out[#out + 1] = ("  %-" .. width .. "s  %s"):format(entry.name, entry.summary)
  end
  out[#out + 1] = "'quan help COMMAND' or 'quan COMMAND --help' shows a command's usage."
  return table.concat(out, "\n") .. "\n"
end

-- names() -> the command words, in table order
local function names()
  local list = {}
  for i, entry in ipairs(M.COMMANDS) do list[i] = entry.name end
  return list
end

-- unknown(word, program) -> 2, after saying that word is no command, with
-- the closest command name when one is close
local function unknown(word, program)
  local close = suggest.closest(word, names())
  io.stderr:write(program, ": unknown command '", word, "'",
    close and ("; did you mean '" .. close .. "'?") or "", " ('quan help' lists the commands)\n")
  io.stderr:flush()
  return options.EXIT_USAGE
end

-- the `help` command: main(opts, arguments) -> exit status
local function help(_, arguments)
  local word = arguments[1]
  if word == nil then
    io.stdout:write("usage: quan [options] [script [args]]\n",
      "       quan [options] COMMAND [args]\n", M.commands_text(),
      "'quan --help' lists the options of the Lua interpreter and quan's own.\n")
  elseif by_name[word] then
    io.stdout:write(M.usage(word))
  else
    return unknown(word, "quan help")
  end
  io.stdout:flush()
  return 0
end

-- exit_status(result) -> the status a command's main returned, as an integer
local function exit_status(result)
  if math.type(result) == "integer" then return result end
  if result == nil or result == true then return 0 end
  return 1
end

by_name.help.main = help

-- main(word, argv, banner) -> exit status | nil. `word` is the first word
-- of quan's command line that is not a long option; argv the words after
-- it; banner the version line main.c prints for `quan` alone. nil: word is
-- no command but a file of that name exists (main.c runs it as a script),
-- or the command is the host's own (`run`).
function M.main(word, argv, banner)
  local entry = by_name[word]
  if entry and entry.host then return nil end
  if not entry then
    if require("quan.os").stat(word) then return nil end
    return unknown(word, "quan")
  end
  argv = argv or {}
  local sub = argv[1] and subcommand(entry, argv[1])
  if sub then entry, argv = sub, table.move(argv, 2, #argv, 1, {}) end
  local opts, arguments = options.read(entry, argv)
  if not opts then return arguments end
  if entry.banner and banner then
    io.stdout:write(banner, "\n")
    io.stdout:flush()
  end
  local main = entry.main or require(entry.module).main
  return exit_status(main(opts, arguments))
end

return M
