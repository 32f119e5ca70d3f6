// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @notice The forge cheatcodes these tests use (forge-std is not on npm in an official form,
/// so the few signatures are declared here).
interface Vm {
    struct Log {
        bytes32[] topics;
        bytes data;
        address emitter;
    }

    function prank(address sender) external;
    function startPrank(address sender) external;
    function stopPrank() external;
    function expectRevert(bytes calldata revertData) external;
    function expectRevert(bytes4 revertData) external;
    function warp(uint256 timestamp) external;
    function addr(uint256 privateKey) external pure returns (address);
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    function assume(bool condition) external pure;
    function recordLogs() external;
    function getRecordedLogs() external returns (Log[] memory);
}

/// @notice Assertions and bounding for forge tests (a failing assertion reverts the test).
abstract contract TestBase {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    function assertTrue(bool condition, string memory what) internal pure {
        require(condition, what);
    }

    function assertEq(uint256 a, uint256 b, string memory what) internal pure {
        if (a != b) revert(string.concat(what, ": uint mismatch"));
    }

    function assertEq(int256 a, int256 b, string memory what) internal pure {
        if (a != b) revert(string.concat(what, ": int mismatch"));
    }

    function assertEq(bytes32 a, bytes32 b, string memory what) internal pure {
        if (a != b) revert(string.concat(what, ": bytes32 mismatch"));
    }

    function assertEq(bytes memory a, bytes memory b, string memory what) internal pure {
        if (keccak256(a) != keccak256(b)) revert(string.concat(what, ": bytes mismatch"));
    }

    /// Map x into [lo, hi] (inclusive), uniformly enough for fuzzing.
    function bound(uint256 x, uint256 lo, uint256 hi) internal pure returns (uint256) {
        require(lo <= hi, "bound: lo > hi");
        if (lo == 0 && hi == type(uint256).max) return x;
        return lo + x % (hi - lo + 1);
    }

    function boundInt(int256 x, int256 lo, int256 hi) internal pure returns (int256) {
        require(lo <= hi, "boundInt: lo > hi");
        uint256 span = uint256(hi - lo);
        if (span == type(uint256).max) return x;
        return lo + int256(uint256(x) % (span + 1));
    }
}
