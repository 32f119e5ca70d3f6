#!/usr/bin/env node
// A minimal `solc` command line around the npm solc (solcjs) package, for py-solc-x, forge and
// slither (crytic-compile). Two differences from the stock `solcjs` command, which is why this
// exists: it never prints a non-JSON line (solcjs prints ">>> Cannot retry compilation with SMT"
// when no SMT solver is installed), and it writes the output with a blocking write so outputs
// over 64 KiB are not truncated on a pipe (solcjs exits before the pipe drains).
//
// Supported:  --version
//             --standard-json  (standard JSON on stdin -> standard JSON on stdout)
// Accepted and used for the import callback: --base-path P, --include-path P (repeatable),
// --allow-paths P[,P] (accepted; imports are read only below these, the base path, the include
// paths and the working directory). Any other option is an error ("unrecognised option").
"use strict";

const fs = require("fs");
const path = require("path");

let solc;
try {
  solc = require("solc");
} catch (err) {
  process.stderr.write(
    "solc-wrapper: the npm package 'solc' is not installed (run `npm ci` at the repo root)\n",
  );
  process.exit(2);
}

function writeAll(fd, text) {
  const buffer = Buffer.from(text, "utf8");
  let offset = 0;
  while (offset < buffer.length) {
    try {
      offset += fs.writeSync(fd, buffer, offset, buffer.length - offset);
    } catch (err) {
      if (err.code !== "EAGAIN") throw err;
    }
  }
}

function parseArgs(argv) {
  const opts = { version: false, standardJson: false, basePath: "", includePaths: [], allowPaths: [] };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    const eq = arg.indexOf("=");
    const name = arg.startsWith("--") && eq > 0 ? arg.slice(0, eq) : arg;
    const inline = arg.startsWith("--") && eq > 0 ? arg.slice(eq + 1) : undefined;
    const value = () => (inline !== undefined ? inline : argv[++i]);
    switch (name) {
      case "--version":
        opts.version = true;
        break;
      case "--standard-json":
        opts.standardJson = true;
        break;
      case "--base-path":
        opts.basePath = value();
        break;
      case "--include-path":
        opts.includePaths.push(value());
        break;
      case "--allow-paths":
        opts.allowPaths.push(...value().split(",").filter((p) => p));
        break;
      case "-":
        break;
      default:
        process.stderr.write(`unrecognised option '${arg}'\n`);
        process.exit(1);
    }
  }
  return opts;
}

function importCallback(opts) {
  const roots = [opts.basePath, ...opts.includePaths, ...opts.allowPaths, process.cwd()]
    .filter((p) => p)
    .map((p) => path.resolve(p));
  return (sourcePath) => {
    const candidates = path.isAbsolute(sourcePath)
      ? [sourcePath]
      : roots.map((root) => path.join(root, sourcePath));
    for (const candidate of candidates) {
      const resolved = path.resolve(candidate);
      if (!roots.some((root) => resolved === root || resolved.startsWith(root + path.sep))) continue;
      if (fs.existsSync(resolved) && fs.statSync(resolved).isFile()) {
        return { contents: fs.readFileSync(resolved, "utf8") };
      }
    }
    return { error: `File not found: ${sourcePath}` };
  };
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.version) {
    // Same shape as the native binary: py-solc-x, forge and crytic-compile parse this line.
    writeAll(1, `solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
    return 0;
  }
  if (!opts.standardJson) {
    process.stderr.write("solc-wrapper: only --version and --standard-json are supported\n");
    return 1;
  }
  const input = fs.readFileSync(0, "utf8");
  const output = solc.compile(input, { import: importCallback(opts) });
  writeAll(1, output.endsWith("\n") ? output : `${output}\n`);
  return 0;
}

process.exitCode = main();
