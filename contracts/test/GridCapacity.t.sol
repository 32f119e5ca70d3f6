// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {GridCapacity} from "../src/GridCapacity.sol";
import {TestBase, Vm} from "./TestBase.sol";

/// @notice Unit and fuzz tests of GridCapacity: roles, band validation and packing, readings.
contract GridCapacityTest is TestBase {
    GridCapacity internal cap;
    address internal constant DSO = address(0xD50);
    address internal constant ORACLE = address(0x0AC1E);
    address internal constant METER = address(0x3E7E2);
    address internal constant OWNER = address(0x0DE2);
    address internal constant STRANGER = address(0xBAD);
    int64 internal constant MAX_RATED = int64(1) << 62;

    function setUp() public {
        vm.warp(1_800_000_000);
        cap = new GridCapacity(DSO, 900, 3600);
        vm.startPrank(DSO);
        cap.grantRole(cap.ORACLE_ROLE(), ORACLE);
        cap.registerDevice(10, 1, GridCapacity.Kind.CommunityBattery, OWNER, METER, -50_000, 50_000);
        cap.registerDevice(20, 2, GridCapacity.Kind.ChargingStation, OWNER, METER, 0, 22_000);
        cap.registerDevice(30, 3, GridCapacity.Kind.Other, OWNER, address(0x3E7E3), -5_000, 5_000);
        vm.stopPrank();
    }

    function _one(uint32 device) internal pure returns (uint32[] memory a) {
        a = new uint32[](1);
        a[0] = device;
    }

    function _one64(int64 v) internal pure returns (int64[] memory a) {
        a = new int64[](1);
        a[0] = v;
    }

    function _write(uint64 interval, uint32 device, int64 lo, int64 hi) internal {
        vm.prank(ORACLE);
        cap.writeBands(interval, keccak256("inputs"), _one(device), _one64(lo), _one64(hi));
    }

    // ---------------------------------------------------------------- roles

    function test_onlyDsoRegistersDevices() public {
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, STRANGER, cap.DEFAULT_ADMIN_ROLE()
            )
        );
        vm.prank(STRANGER);
        cap.registerDevice(40, 4, GridCapacity.Kind.Other, OWNER, METER, 0, 1);
    }

    function test_onlyOracleWritesBands() public {
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, DSO, cap.ORACLE_ROLE()
            )
        );
        vm.prank(DSO);
        cap.writeBands(1, bytes32(0), _one(10), _one64(0), _one64(1));
    }

    function test_registerGrantsMeterRoleAndRejectsDuplicates() public view {
        assertTrue(cap.hasRole(cap.METER_ROLE(), METER), "meter role");
        assertEq(cap.deviceCount(), 3, "count");
        assertEq(uint256(cap.deviceIdAt(1)), 20, "index 1");
        GridCapacity.Device memory d = cap.deviceOf(20);
        assertEq(uint256(d.index), 1, "device index");
        assertEq(int256(d.pMaxRatedW), 22_000, "rated max");
    }

    function test_registerRejectsDuplicateAndBadRange() public {
        vm.startPrank(DSO);
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.DeviceExists.selector, uint32(10)));
        cap.registerDevice(10, 1, GridCapacity.Kind.Other, OWNER, METER, 0, 1);
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.InvalidRatedRange.selector, int64(5), int64(4)));
        cap.registerDevice(11, 1, GridCapacity.Kind.Other, OWNER, METER, 5, 4);
        vm.expectRevert(
            abi.encodeWithSelector(GridCapacity.InvalidRatedRange.selector, int64(0), MAX_RATED + 1)
        );
        cap.registerDevice(11, 1, GridCapacity.Kind.Other, OWNER, METER, 0, MAX_RATED + 1);
        vm.stopPrank();
    }

    // ---------------------------------------------------------------- bands

    function test_bandsMonotonicAndWrittenOnce() public {
        _write(100, 10, -1_000, 2_000);
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.IntervalAlreadyWritten.selector, uint64(100)));
        _write(100, 10, -1_000, 2_000);
        vm.expectRevert(
            abi.encodeWithSelector(GridCapacity.IntervalNotMonotonic.selector, uint64(99), uint64(100))
        );
        _write(99, 10, -1_000, 2_000);
        _write(101, 20, 0, 0);
        assertEq(uint256(cap.lastInterval()), 101, "last interval");
        (bytes32 h, uint64 updatedAt, uint32 count) = cap.intervalRecord(100);
        assertEq(h, keccak256("inputs"), "inputs hash");
        assertEq(uint256(updatedAt), block.timestamp, "updatedAt");
        assertEq(uint256(count), 1, "band count");
    }

    function test_zeroWidthBandIsStoredAndDistinctFromNone() public {
        _write(5, 20, 0, 0);
        (int64 lo, int64 hi,) = cap.bandOf(20, 5);
        assertEq(int256(lo), 0, "lo");
        assertEq(int256(hi), 0, "hi");
        assertTrue(cap.hasBand(20, 5) && !cap.hasBand(10, 5), "presence");
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.NoBand.selector, uint32(10), uint64(5)));
        cap.bandOf(10, 5);
    }

    function test_duplicateDeviceInBatchReverts() public {
        uint32[] memory ids = new uint32[](2);
        ids[0] = 20;
        ids[1] = 20;
        int64[] memory lo = new int64[](2);
        int64[] memory hi = new int64[](2);
        hi[0] = 1;
        hi[1] = 1;
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.DuplicateDevice.selector, uint32(20)));
        vm.prank(ORACLE);
        cap.writeBands(7, bytes32(0), ids, lo, hi);
    }

    function testFuzz_bandRoundTripAndIsInside(int64 ratedA, int64 ratedB, int64 a, int64 b, int64 p) public {
        int64 rLo = int64(boundInt(ratedA, -MAX_RATED, MAX_RATED));
        int64 rHi = int64(boundInt(ratedB, rLo, MAX_RATED));
        int64 lo = int64(boundInt(a, rLo, rHi));
        int64 hi = int64(boundInt(b, lo, rHi));
        vm.startPrank(DSO);
        cap.registerDevice(77, 7, GridCapacity.Kind.Other, OWNER, METER, rLo, rHi); // index 3
        cap.registerDevice(78, 7, GridCapacity.Kind.Other, OWNER, METER, rLo, rHi); // index 4
        cap.registerDevice(79, 7, GridCapacity.Kind.Other, OWNER, METER, rLo, rHi); // index 5
        vm.stopPrank();
        uint32[] memory ids = new uint32[](3);
        (ids[0], ids[1], ids[2]) = (79, 77, 78); // 77 and 79 share no slot; 78 and 79 do
        int64[] memory los = new int64[](3);
        int64[] memory his = new int64[](3);
        (los[0], los[1], los[2]) = (rLo, lo, lo);
        (his[0], his[1], his[2]) = (rHi, hi, hi);
        vm.prank(ORACLE);
        cap.writeBands(1, bytes32(0), ids, los, his);
        (int64 gotLo, int64 gotHi,) = cap.bandOf(77, 1);
        assertEq(int256(gotLo), int256(lo), "lo 77");
        assertEq(int256(gotHi), int256(hi), "hi 77");
        (gotLo, gotHi,) = cap.bandOf(78, 1);
        assertEq(int256(gotLo), int256(lo), "lo 78 (shares a slot with 79)");
        assertEq(int256(gotHi), int256(hi), "hi 78");
        (gotLo, gotHi,) = cap.bandOf(79, 1);
        assertEq(int256(gotLo), int256(rLo), "lo 79");
        assertEq(int256(gotHi), int256(rHi), "hi 79");
        assertTrue(cap.isInside(77, 1, p) == (lo <= p && p <= hi), "isInside");
    }

    function testFuzz_invalidBandsRevert(int64 a, int64 b) public {
        vm.assume(a != b);
        (int64 lo, int64 hi) = a < b ? (b, a) : (a, b); // lo > hi
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.InvalidBand.selector, uint32(10), lo, hi));
        _write(3, 10, lo, hi);
    }

    function testFuzz_outsideRatedRangeReverts(int64 a, int64 b) public {
        int64 lo = int64(boundInt(a, type(int64).min, 50_000));
        int64 hi = int64(boundInt(b, lo, type(int64).max));
        vm.assume(lo < -50_000 || hi > 50_000);
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.OutsideRatedRange.selector, uint32(10), lo, hi));
        _write(3, 10, lo, hi);
    }

    function testFuzz_bandsEventPacksTheRecords(int64 a, int64 b) public {
        int64 lo = int64(boundInt(a, -50_000, 0));
        int64 hi = int64(boundInt(b, 0, 22_000));
        uint32[] memory ids = new uint32[](2);
        (ids[0], ids[1]) = (20, 10);
        int64[] memory los = new int64[](2);
        int64[] memory his = new int64[](2);
        (los[0], los[1]) = (0, lo);
        (his[0], his[1]) = (hi, hi);
        vm.recordLogs();
        vm.prank(ORACLE);
        cap.writeBands(9, keccak256("x"), ids, los, his);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertEq(logs.length, 1, "one event");
        assertEq(logs[0].topics[1], bytes32(uint256(9)), "interval topic");
        (bytes32 h, uint64 updatedAt, bytes memory bands) = abi.decode(logs[0].data, (bytes32, uint64, bytes));
        assertEq(h, keccak256("x"), "hash");
        assertEq(uint256(updatedAt), block.timestamp, "updatedAt");
        assertEq(bands, abi.encodePacked(uint32(20), int64(0), hi, uint32(10), lo, hi), "records");
    }

    function test_latestBandStaleness() public {
        _write(8, 10, -10, 10);
        (uint64 interval, int64 lo,, uint64 updatedAt) = cap.latestBand(10);
        assertEq(uint256(interval), 8, "latest interval");
        assertEq(int256(lo), -10, "latest lo");
        vm.warp(uint256(updatedAt) + 3600);
        cap.latestBand(10); // exactly at the heartbeat: still fresh
        vm.warp(uint256(updatedAt) + 3601);
        vm.expectRevert(
            abi.encodeWithSelector(GridCapacity.StaleBand.selector, uint64(8), updatedAt, uint64(3600))
        );
        cap.latestBand(10);
    }

    // ---------------------------------------------------------------- readings

    function testFuzz_readingsEventCarriesTheExactBlob(
        uint32 t,
        int32 pW,
        int32 qVar,
        uint32 vMicroPu,
        int32 angleMicroRad,
        uint8 countSeed
    ) public {
        uint256 count = bound(countSeed, 1, 20);
        bytes memory packed;
        for (uint256 k = 0; k < count; ++k) {
            uint32 device = k % 2 == 0 ? 10 : 20;
            packed = bytes.concat(packed, abi.encodePacked(device, t, pW, qVar, vMicroPu, angleMicroRad));
        }
        vm.recordLogs();
        vm.prank(METER);
        cap.postReadings(packed);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertEq(logs.length, 1, "one event");
        assertEq(logs[0].topics[1], bytes32(uint256(uint160(METER))), "meter topic");
        (uint256 n, bytes memory blob) = abi.decode(logs[0].data, (uint256, bytes));
        assertEq(n, count, "count");
        assertEq(blob, packed, "blob");
    }

    function test_readingsRejectForeignDeviceAndBadLength() public {
        bytes memory foreign = abi.encodePacked(uint32(30), uint32(1), int32(1), int32(1), uint32(1), int32(1));
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.MeterNotForDevice.selector, uint32(30), METER));
        vm.prank(METER);
        cap.postReadings(foreign);
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.InvalidReadingsLength.selector, uint256(23)));
        vm.prank(METER);
        cap.postReadings(new bytes(23));
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, STRANGER, cap.METER_ROLE()
            )
        );
        vm.prank(STRANGER);
        cap.postReadings(new bytes(24));
    }
}
