// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {IAccessControlDefaultAdminRules} from
    "@openzeppelin/contracts/access/extensions/IAccessControlDefaultAdminRules.sol";
import {GridCapacity} from "../src/GridCapacity.sol";
import {TestBase, Vm} from "./TestBase.sol";

/// @notice Unit and fuzz tests of GridCapacity: roles, admin rules, the interval window, band
/// validation and dense packing, readings, vehicle sessions, meter totals.
contract GridCapacityTest is TestBase {
    GridCapacity internal cap;
    address internal constant DSO = address(0xD50);
    address internal constant ORACLE = address(0x0AC1E);
    address internal constant METER = address(0x3E7E2);
    address internal constant OWNER = address(0x0DE2);
    address internal constant STRANGER = address(0xBAD);
    int64 internal constant MAX_RATED = type(int32).max;
    uint48 internal constant ADMIN_DELAY = 2 days;
    uint64 internal constant AHEAD = 96;
    uint64 internal constant NOW_S = 1_800_000_000;
    uint64 internal constant I0 = NOW_S / 900; // the current interval at setUp

    function setUp() public {
        vm.warp(NOW_S);
        cap = new GridCapacity(DSO, ADMIN_DELAY, 900, 3600, AHEAD);
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

    // ---------------------------------------------------------------- roles and admin rules

    function test_onlyDsoRegistersDevices() public {
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, STRANGER, cap.DEFAULT_ADMIN_ROLE()
            )
        );
        vm.prank(STRANGER);
        cap.registerDevice(40, 4, GridCapacity.Kind.Other, OWNER, METER, 0, 1);
    }

    function test_onlyOracleWritesBandsAndTotals() public {
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, DSO, cap.ORACLE_ROLE())
        );
        vm.prank(DSO);
        cap.writeBands(I0, bytes32(0), _one(10), _one64(0), _one64(1));
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, METER, cap.ORACLE_ROLE())
        );
        vm.prank(METER);
        cap.writeMeterTotals(I0 - 1, "");
    }

    /// The next call, from `caller`, must revert for lack of `role`.
    function _expectUnauthorized(address caller, bytes32 role) internal {
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, caller, role)
        );
        vm.prank(caller);
    }

    function test_onlyOracleWritesTheReserve() public {
        address[3] memory wrong = [DSO, METER, STRANGER];
        bytes32 role = cap.ORACLE_ROLE();
        for (uint256 k = 0; k < wrong.length; ++k) {
            _expectUnauthorized(wrong[k], role);
            cap.writeBandsWithReserve(I0, bytes32(0), _one(10), _one64(0), _one64(1), 5);
        }
        (bool written,) = cap.reserveOf(I0);
        assertTrue(!written, "no reserve from a wrong caller");
    }

    /// The reserve rides with the bands: once, in the same window, any uint64; plain
    /// `writeBands` leaves none.
    function testFuzz_reserveIsWrittenOnceWithTheBands(uint64 reserveWh, uint64 ahead) public {
        ahead = ahead % (AHEAD + 1);
        vm.recordLogs();
        vm.prank(ORACLE);
        cap.writeBandsWithReserve(I0 + ahead, keccak256("in"), _one(10), _one64(-7), _one64(9), reserveWh);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertEq(logs.length, 2, "bands and reserve events");
        assertEq(logs[1].topics[0], keccak256("ReserveWritten(uint64,uint64)"), "reserve event");
        assertEq(logs[1].topics[1], bytes32(uint256(I0 + ahead)), "interval topic");
        assertEq(abi.decode(logs[1].data, (uint256)), uint256(reserveWh), "reserve in the event");
        (bool written, uint64 got) = cap.reserveOf(I0 + ahead);
        assertEq(uint256(got), uint256(reserveWh), "reserve");
        assertTrue(written, "written");
        (int64 lo, int64 hi,) = cap.bandOf(10, I0 + ahead);
        assertEq(int256(lo), -7, "P_min");
        assertEq(int256(hi), 9, "P_max");
        (bytes32 inputsHash,, uint32 count) = cap.intervalRecord(I0 + ahead);
        assertEq(inputsHash, keccak256("in"), "inputs hash");
        assertEq(uint256(count), 1, "band count");
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.IntervalAlreadyWritten.selector, I0 + ahead));
        vm.prank(ORACLE);
        cap.writeBandsWithReserve(I0 + ahead, bytes32(0), _one(10), _one64(0), _one64(1), 1);
    }

    function test_reserveOutsideTheWindowOrWithBadBandsReverts() public {
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.IntervalInPast.selector, I0 - 1, I0));
        vm.prank(ORACLE);
        cap.writeBandsWithReserve(I0 - 1, bytes32(0), _one(10), _one64(0), _one64(1), 1);
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.IntervalTooFarAhead.selector, I0 + AHEAD + 1, I0 + AHEAD));
        vm.prank(ORACLE);
        cap.writeBandsWithReserve(I0 + AHEAD + 1, bytes32(0), _one(10), _one64(0), _one64(1), 1);
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.InvalidBand.selector, uint32(10), int64(2), int64(1)));
        vm.prank(ORACLE);
        cap.writeBandsWithReserve(I0, bytes32(0), _one(10), _one64(2), _one64(1), 1);
        vm.expectRevert(GridCapacity.EmptyBatch.selector);
        vm.prank(ORACLE);
        cap.writeBandsWithReserve(I0, bytes32(0), new uint32[](0), new int64[](0), new int64[](0), 1);
        _write(I0, 10, 0, 1);
        (bool written, uint64 reserveWh) = cap.reserveOf(I0);
        assertTrue(!written, "writeBands writes no reserve");
        assertEq(uint256(reserveWh), 0, "no reserve");
    }

    function test_adminCannotRenounceOrHandOverInOneStep() public {
        bytes32 admin = cap.DEFAULT_ADMIN_ROLE();
        vm.startPrank(DSO);
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControlDefaultAdminRules.AccessControlEnforcedDefaultAdminDelay.selector, 0)
        );
        cap.renounceRole(admin, DSO);
        vm.expectRevert(IAccessControlDefaultAdminRules.AccessControlEnforcedDefaultAdminRules.selector);
        cap.revokeRole(admin, DSO);
        vm.expectRevert(IAccessControlDefaultAdminRules.AccessControlEnforcedDefaultAdminRules.selector);
        cap.grantRole(admin, STRANGER);
        // two steps: begin, wait the delay, the new admin accepts
        cap.beginDefaultAdminTransfer(STRANGER);
        vm.stopPrank();
        uint48 schedule = uint48(block.timestamp) + ADMIN_DELAY;
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControlDefaultAdminRules.AccessControlEnforcedDefaultAdminDelay.selector, schedule
            )
        );
        vm.prank(STRANGER);
        cap.acceptDefaultAdminTransfer();
        vm.warp(uint256(schedule) + 1);
        vm.prank(STRANGER);
        cap.acceptDefaultAdminTransfer();
        assertTrue(cap.hasRole(admin, STRANGER) && !cap.hasRole(admin, DSO), "admin handed over");
    }

    function test_rolesAreSeparated() public {
        bytes32 oracle = cap.ORACLE_ROLE();
        bytes32 admin = cap.DEFAULT_ADMIN_ROLE();
        vm.startPrank(DSO);
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.RoleConflict.selector, DSO, admin, oracle));
        cap.grantRole(oracle, DSO); // the DSO may not make itself oracle
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.RoleConflict.selector, ORACLE, oracle, cap.METER_ROLE()));
        cap.registerDevice(41, 4, GridCapacity.Kind.Other, OWNER, ORACLE, 0, 1); // nor the oracle a meter
        cap.beginDefaultAdminTransfer(ORACLE);
        vm.stopPrank();
        vm.warp(block.timestamp + ADMIN_DELAY + 1);
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.RoleConflict.selector, ORACLE, oracle, admin));
        vm.prank(ORACLE);
        cap.acceptDefaultAdminTransfer(); // nor the oracle the admin
    }

    function test_registerGrantsMeterRoleAndRejectsDuplicates() public {
        assertTrue(cap.hasRole(cap.METER_ROLE(), METER), "meter role");
        assertEq(cap.deviceCount(), 3, "count");
        assertEq(uint256(cap.deviceIdAt(1)), 20, "index 1");
        GridCapacity.Device memory d = cap.deviceOf(20);
        assertEq(uint256(d.index), 1, "device index");
        assertEq(int256(d.pMaxRatedW), 22_000, "rated max");
        vm.startPrank(DSO);
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.DeviceExists.selector, uint32(10)));
        cap.registerDevice(10, 1, GridCapacity.Kind.Other, OWNER, METER, 0, 1);
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.InvalidRatedRange.selector, int64(5), int64(4)));
        cap.registerDevice(11, 1, GridCapacity.Kind.Other, OWNER, METER, 5, 4);
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.InvalidRatedRange.selector, int64(0), MAX_RATED + 1));
        cap.registerDevice(11, 1, GridCapacity.Kind.Other, OWNER, METER, 0, MAX_RATED + 1);
        vm.expectRevert(GridCapacity.ZeroAddress.selector);
        cap.registerDevice(11, 1, GridCapacity.Kind.Other, OWNER, address(0), 0, 1);
        vm.stopPrank();
    }

    // ---------------------------------------------------------------- the interval window

    function test_bandsOnlyInsideTheWindowAndOncePerInterval() public {
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.IntervalInPast.selector, I0 - 1, I0));
        _write(I0 - 1, 10, -1_000, 2_000);
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.IntervalTooFarAhead.selector, I0 + AHEAD + 1, I0 + AHEAD));
        _write(I0 + AHEAD + 1, 10, -1_000, 2_000);
        vm.expectRevert(
            abi.encodeWithSelector(GridCapacity.IntervalTooFarAhead.selector, type(uint64).max, I0 + AHEAD)
        );
        _write(type(uint64).max, 10, -1_000, 2_000);
        _write(I0 + AHEAD, 10, -1_000, 2_000); // the far edge is accepted ...
        _write(I0 + 1, 10, -500, 500); // ... and blocks no other interval, earlier or later
        _write(I0, 10, -500, 500);
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.IntervalAlreadyWritten.selector, I0 + 1));
        _write(I0 + 1, 20, 0, 1);
        assertEq(uint256(cap.lastInterval()), uint256(I0 + AHEAD), "last = highest written");
        vm.warp(uint256(I0 + AHEAD + 1) * 900); // time moves on: the window moves with it
        _write(I0 + 2 * AHEAD + 1, 10, 0, 0);
        (bytes32 h, uint64 updatedAt, uint32 count) = cap.intervalRecord(I0 + 1);
        assertEq(h, keccak256("inputs"), "inputs hash");
        assertEq(uint256(updatedAt), NOW_S, "updatedAt");
        assertEq(uint256(count), 1, "band count");
    }

    function test_zeroWidthBandIsStoredAndDistinctFromNone() public {
        _write(I0 + 5, 20, 0, 0);
        (int64 lo, int64 hi,) = cap.bandOf(20, I0 + 5);
        assertEq(int256(lo), 0, "lo");
        assertEq(int256(hi), 0, "hi");
        assertTrue(cap.hasBand(20, I0 + 5) && !cap.hasBand(10, I0 + 5), "presence");
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.NoBand.selector, uint32(10), I0 + 5));
        cap.bandOf(10, I0 + 5);
    }

    function test_batchMustAscendByRegistrationIndex() public {
        uint32[] memory ids = new uint32[](2);
        int64[] memory lo = new int64[](2);
        int64[] memory hi = new int64[](2);
        (hi[0], hi[1]) = (1, 1);
        (ids[0], ids[1]) = (20, 20);
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.DuplicateDevice.selector, uint32(20)));
        vm.prank(ORACLE);
        cap.writeBands(I0, bytes32(0), ids, lo, hi);
        (ids[0], ids[1]) = (20, 10);
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.DevicesNotAscending.selector, uint32(10)));
        vm.prank(ORACLE);
        cap.writeBands(I0, bytes32(0), ids, lo, hi);
        vm.expectRevert(GridCapacity.LengthMismatch.selector);
        vm.prank(ORACLE);
        cap.writeBands(I0, bytes32(0), ids, lo, new int64[](1));
        vm.expectRevert(GridCapacity.EmptyBatch.selector);
        vm.prank(ORACLE);
        cap.writeBands(I0, bytes32(0), new uint32[](0), new int64[](0), new int64[](0));
    }

    /// Any subset of 270 registered devices (bitmap words 0 and 1) reads back band by band.
    function testFuzz_scatteredSubsetRoundTrip(uint256 mask0, uint256 mask1, int64 a, int64 b) public {
        vm.startPrank(DSO);
        for (uint32 k = 3; k < 270; ++k) {
            cap.registerDevice(1_000 + 7_919 * k, k, GridCapacity.Kind.Other, OWNER, METER, -MAX_RATED, MAX_RATED);
        }
        vm.stopPrank();
        uint256 n = 0;
        for (uint256 k = 3; k < 270; ++k) {
            if (_chosen(k, mask0, mask1)) ++n;
        }
        vm.assume(n > 0);
        uint32[] memory ids = new uint32[](n);
        int64[] memory los = new int64[](n);
        int64[] memory his = new int64[](n);
        uint256 j = 0;
        for (uint256 k = 3; k < 270; ++k) {
            if (!_chosen(k, mask0, mask1)) continue;
            ids[j] = uint32(1_000 + 7_919 * k);
            los[j] = int64(boundInt(int256(a) - int256(k), -MAX_RATED, MAX_RATED));
            his[j] = int64(boundInt(int256(b) + int256(k), los[j], MAX_RATED));
            ++j;
        }
        vm.prank(ORACLE);
        cap.writeBands(I0 + 3, bytes32(0), ids, los, his);
        j = 0;
        for (uint256 k = 3; k < 270; ++k) {
            uint32 id = uint32(1_000 + 7_919 * k);
            if (!_chosen(k, mask0, mask1)) {
                assertTrue(!cap.hasBand(id, I0 + 3), "band for an unwritten device");
                continue;
            }
            (int64 lo, int64 hi,) = cap.bandOf(id, I0 + 3);
            assertEq(int256(lo), int256(los[j]), "lo");
            assertEq(int256(hi), int256(his[j]), "hi");
            ++j;
        }
    }

    function _chosen(uint256 k, uint256 mask0, uint256 mask1) internal pure returns (bool) {
        return k < 256 ? (mask0 >> k) & 1 == 1 : (mask1 >> (k - 256)) & 1 == 1;
    }

    function test_allOnesBitmapWordCounts256() public {
        vm.startPrank(DSO);
        for (uint32 k = 3; k < 258; ++k) {
            cap.registerDevice(100 + k, k, GridCapacity.Kind.Other, OWNER, METER, -10, 10);
        }
        vm.stopPrank();
        uint32[] memory ids = new uint32[](258);
        int64[] memory los = new int64[](258);
        int64[] memory his = new int64[](258);
        (ids[0], ids[1], ids[2]) = (10, 20, 30);
        for (uint256 k = 3; k < 258; ++k) {
            ids[k] = uint32(100 + k);
            los[k] = -int64(int256(k % 10));
            his[k] = int64(int256(k % 7));
        }
        vm.prank(ORACLE);
        cap.writeBands(I0, bytes32(0), ids, los, his);
        (int64 lo, int64 hi,) = cap.bandOf(100 + 257, I0); // rank 257 after a full first word
        assertEq(int256(lo), -int256(uint256(257 % 10)), "lo after full word");
        assertEq(int256(hi), int256(uint256(257 % 7)), "hi after full word");
    }

    function testFuzz_invalidBandsRevert(int64 a, int64 b) public {
        vm.assume(a != b);
        (int64 lo, int64 hi) = a < b ? (b, a) : (a, b); // lo > hi
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.InvalidBand.selector, uint32(10), lo, hi));
        _write(I0 + 3, 10, lo, hi);
    }

    function testFuzz_outsideRatedRangeReverts(int64 a, int64 b) public {
        int64 lo = int64(boundInt(a, type(int64).min, 50_000));
        int64 hi = int64(boundInt(b, lo, type(int64).max));
        vm.assume(lo < -50_000 || hi > 50_000);
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.OutsideRatedRange.selector, uint32(10), lo, hi));
        _write(I0 + 3, 10, lo, hi);
    }

    function testFuzz_bandsEventPacksTheRecords(int64 a, int64 b, int64 p) public {
        int64 lo = int64(boundInt(a, -50_000, 0));
        int64 hi = int64(boundInt(b, 0, 22_000));
        uint32[] memory ids = new uint32[](2);
        (ids[0], ids[1]) = (10, 20);
        int64[] memory los = new int64[](2);
        int64[] memory his = new int64[](2);
        (los[0], los[1]) = (lo, 0);
        (his[0], his[1]) = (hi, hi);
        vm.recordLogs();
        vm.prank(ORACLE);
        cap.writeBands(I0 + 9, keccak256("x"), ids, los, his);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertEq(logs.length, 1, "one event");
        assertEq(logs[0].topics[1], bytes32(uint256(I0 + 9)), "interval topic");
        (bytes32 h, uint64 updatedAt, bytes memory bands) = abi.decode(logs[0].data, (bytes32, uint64, bytes));
        assertEq(h, keccak256("x"), "hash");
        assertEq(uint256(updatedAt), block.timestamp, "updatedAt");
        assertEq(bands, abi.encodePacked(uint32(10), lo, hi, uint32(20), int64(0), hi), "records");
        assertTrue(cap.isInside(10, I0 + 9, p) == (lo <= p && p <= hi), "isInside");
    }

    function test_latestBandIsTheCurrentIntervalsAndGoesStale() public {
        _write(I0, 10, -10, 10);
        (uint64 interval, int64 lo,, uint64 updatedAt) = cap.latestBand(10);
        assertEq(uint256(interval), uint256(I0), "current interval");
        assertEq(int256(lo), -10, "latest lo");
        _write(I0 + 4, 10, -20, 20); // a band for a later interval is not the current one
        (, lo,,) = cap.latestBand(10);
        assertEq(int256(lo), -10, "still the current interval's band");
        vm.warp(uint256(updatedAt) + 899); // still inside I0
        cap.latestBand(10);
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.NoBand.selector, uint32(20), I0));
        cap.latestBand(20);
        vm.prank(DSO);
        cap.setHeartbeat(60);
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.StaleBand.selector, I0, updatedAt, uint64(60)));
        cap.latestBand(10);
    }

    // ---------------------------------------------------------------- readings

    function testFuzz_readingsEventCarriesTheExactBlob(
        uint32 device,
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
            packed = bytes.concat(packed, abi.encodePacked(device ^ uint32(k), t, pW, qVar, vMicroPu, angleMicroRad));
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

    function test_readingsRejectBadLengthAndNonMeters() public {
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.InvalidReadingsLength.selector, uint256(23)));
        vm.prank(METER);
        cap.postReadings(new bytes(23));
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.InvalidReadingsLength.selector, uint256(0)));
        vm.prank(METER);
        cap.postReadings("");
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, STRANGER, cap.METER_ROLE())
        );
        vm.prank(STRANGER);
        cap.postReadings(new bytes(24));
    }

    // ---------------------------------------------------------------- vehicle sessions

    function _declareAndDecode(bytes memory packed) internal returns (uint256 n, bytes memory blob) {
        vm.recordLogs();
        vm.prank(METER);
        cap.declareSessions(packed);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertEq(logs.length, 1, "one event");
        assertTrue(logs[0].emitter == address(cap), "emitter");
        assertEq(logs[0].topics.length, 2, "topics");
        assertEq(logs[0].topics[0], keccak256("SessionsDeclared(address,uint256,bytes)"), "event signature");
        assertEq(logs[0].topics[1], bytes32(uint256(uint160(METER))), "meter topic");
        (n, blob) = abi.decode(logs[0].data, (uint256, bytes));
    }

    function test_sessionsEventCarriesOneAndSeveralRecords() public {
        assertEq(cap.SESSION_BYTES(), 16, "SESSION_BYTES");
        uint32 arrive = uint32(NOW_S);
        bytes memory one = abi.encodePacked(uint32(20), arrive, arrive + 4 hours, uint32(30_000));
        assertEq(one.length, 16, "record length");
        (uint256 n, bytes memory blob) = _declareAndDecode(one);
        assertEq(n, 1, "count, one record");
        assertEq(blob, one, "blob, one record");

        bytes memory several = bytes.concat(
            one,
            abi.encodePacked(uint32(20), arrive + 5 hours, arrive + 6 hours, uint32(7_500)),
            // the contract checks no field: unregistered device, departAt before arriveAt, max Wh
            abi.encodePacked(uint32(999), arrive, arrive - 1, type(uint32).max)
        );
        (n, blob) = _declareAndDecode(several);
        assertEq(n, 3, "count, three records");
        assertEq(blob, several, "blob, three records");
    }

    function testFuzz_sessionsEventCarriesTheExactBlob(
        uint32 device,
        uint32 arriveAt,
        uint32 departAt,
        uint32 energyWh,
        uint8 countSeed
    ) public {
        uint256 count = bound(countSeed, 1, 20);
        bytes memory packed;
        for (uint256 k = 0; k < count; ++k) {
            packed = bytes.concat(packed, abi.encodePacked(device ^ uint32(k), arriveAt, departAt, energyWh));
        }
        (uint256 n, bytes memory blob) = _declareAndDecode(packed);
        assertEq(n, count, "count");
        assertEq(blob, packed, "blob");
    }

    function testFuzz_sessionsRejectLengthsNotAPositiveMultipleOf16(uint16 lengthSeed) public {
        uint256 length = bound(lengthSeed, 0, 1_000);
        if (length == 0 || length % 16 != 0) {
            vm.expectRevert(abi.encodeWithSelector(GridCapacity.InvalidSessionsLength.selector, length));
            vm.prank(METER);
            cap.declareSessions(new bytes(length));
        } else {
            (uint256 n, bytes memory blob) = _declareAndDecode(new bytes(length));
            assertEq(n, length / 16, "count");
            assertEq(blob.length, length, "blob length");
        }
    }

    function test_sessionsRejectBadLength() public {
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.InvalidSessionsLength.selector, uint256(0)));
        vm.prank(METER);
        cap.declareSessions("");
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.InvalidSessionsLength.selector, uint256(15)));
        vm.prank(METER);
        cap.declareSessions(new bytes(15));
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.InvalidSessionsLength.selector, uint256(17)));
        vm.prank(METER);
        cap.declareSessions(new bytes(17));
    }

    function test_sessionsOnlyFromMeters() public {
        address[3] memory callers = [ORACLE, DSO, STRANGER];
        bytes32 role = cap.METER_ROLE();
        for (uint256 k = 0; k < callers.length; ++k) {
            _expectUnauthorized(callers[k], role);
            cap.declareSessions(new bytes(16));
        }
        // any METER_ROLE holder may declare, also a meter of no charging station (the oracle filters)
        vm.prank(address(0x3E7E3));
        cap.declareSessions(new bytes(16));
    }

    // ---------------------------------------------------------------- meter totals

    function test_meterTotalsOnlyAfterTheIntervalOnceAndAscending() public {
        bytes memory totals = abi.encodePacked(uint32(10), int64(-1_250), uint32(30), int64(type(int64).max));
        vm.startPrank(ORACLE);
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.IntervalNotOver.selector, I0, I0));
        cap.writeMeterTotals(I0, totals);
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.IntervalNotOver.selector, type(uint64).max, I0));
        cap.writeMeterTotals(type(uint64).max, totals);
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.InvalidTotalsLength.selector, uint256(13)));
        cap.writeMeterTotals(I0 - 1, new bytes(13));
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.TotalsNotAscending.selector, uint32(10)));
        cap.writeMeterTotals(I0 - 1, abi.encodePacked(uint32(30), int64(1), uint32(10), int64(1)));
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.TotalsNotAscending.selector, uint32(30)));
        cap.writeMeterTotals(I0 - 1, abi.encodePacked(uint32(30), int64(1), uint32(30), int64(1)));
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.UnknownDevice.selector, uint32(31)));
        cap.writeMeterTotals(I0 - 1, abi.encodePacked(uint32(31), int64(1)));
        vm.recordLogs();
        cap.writeMeterTotals(I0 - 1, totals);
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.MeterTotalsAlreadyWritten.selector, I0 - 1));
        cap.writeMeterTotals(I0 - 1, "");
        cap.writeMeterTotals(0, ""); // any past interval, empty allowed
        vm.stopPrank();
        Vm.Log[] memory logs = vm.getRecordedLogs();
        (bytes32 h, bytes memory blob) = abi.decode(logs[0].data, (bytes32, bytes));
        assertEq(h, keccak256(totals), "hash in the event");
        assertEq(blob, totals, "totals in the event");
        assertEq(cap.meterTotalsHash(I0 - 1), keccak256(totals), "stored hash");
        assertTrue(cap.meterTotalsHash(0) != 0, "empty totals are written too");
    }
}
