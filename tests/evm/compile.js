// Compiles a Solidity file with solcjs (the compiler bundled in the npm
// package: nothing is downloaded) and prints {"abi", "bytecode"} of its
// first contract as JSON.  Usage: node compile.js <node_modules dir> <file.sol>
const path = require("path");
const fs = require("fs");
const solc = require(path.join(process.argv[2], "solc"));

const file = process.argv[3];
const input = {
  language: "Solidity",
  sources: { [path.basename(file)]: { content: fs.readFileSync(file, "utf8") } },
  settings: {
    evmVersion: "paris", // ganache 7 predates PUSH0 (shanghai) and cancun
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
const out = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (out.errors || []).filter((e) => e.severity === "error");
if (errors.length) {
  console.error(errors.map((e) => e.formattedMessage).join("\n"));
  process.exit(1);
}
const contracts = out.contracts[path.basename(file)];
const name = Object.keys(contracts)[0];
console.log(JSON.stringify({ name, abi: contracts[name].abi,
                             bytecode: contracts[name].evm.bytecode.object }));
