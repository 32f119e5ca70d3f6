// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {IAccessControlDefaultAdminRules} from
    "@openzeppelin/contracts/access/extensions/IAccessControlDefaultAdminRules.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {GridCapacity} from "../src/GridCapacity.sol";
import {GridMarket, IGridCapacity} from "../src/GridMarket.sol";
import {TestBase, Vm} from "./TestBase.sol";

/// @notice Shared deployment: capacity with the battery (device 1) and three member meters
/// (devices 2, 3, 4), the market, three prosumers.
abstract contract MarketFixture is TestBase {
    GridCapacity internal cap;
    GridMarket internal market;
    address internal constant DSO = address(0xD50);
    address internal constant ORACLE = address(0x0AC1E);
    address internal constant SETTLER = address(0x5E771E);
    address internal constant BATTERY = address(0xBA77);
    address internal constant METER = address(0x3E7E2);
    address internal constant STRANGER = address(0xBAD);
    uint64 internal constant RETAIL = 300_000;
    uint64 internal constant FEED_IN = 80_000;
    uint64 internal constant IMBALANCE_BUY = 350_000;
    uint64 internal constant IMBALANCE_SELL = 60_000;
    uint64 internal constant MIN_PRICE = 50_000;
    uint64 internal constant MAX_PRICE = 400_000;
    uint64 internal constant MAX_ENERGY = 1_000_000;
    uint64 internal constant INTERVAL_S = 900;
    uint64 internal constant AHEAD = 96;
    uint64 internal constant NOW_S = 1_800_000_000;
    uint64 internal constant I0 = NOW_S / INTERVAL_S;
    uint48 internal constant ADMIN_DELAY = 2 days;
    int64 internal constant BATTERY_RATED_W = 100_000;
    uint32 internal constant GRID = type(uint32).max;
    uint32 internal constant BATT = type(uint32).max - 1;
    uint256[3] internal keys = [uint256(0xA11CE), uint256(0xB0B), uint256(0xCA401)];
    address[3] internal members;

    function _deploy() internal {
        vm.warp(NOW_S);
        cap = new GridCapacity(DSO, ADMIN_DELAY, INTERVAL_S, 3600, AHEAD);
        market = new GridMarket(
            DSO,
            ADMIN_DELAY,
            IGridCapacity(address(cap)),
            1,
            BATTERY,
            GridMarket.Tariffs(RETAIL, FEED_IN, IMBALANCE_BUY, IMBALANCE_SELL),
            GridMarket.OrderBounds(MIN_PRICE, MAX_PRICE, MAX_ENERGY)
        );
        vm.startPrank(DSO);
        cap.grantRole(cap.ORACLE_ROLE(), ORACLE);
        cap.registerDevice(
            1, 1, GridCapacity.Kind.CommunityBattery, BATTERY, METER, -BATTERY_RATED_W, BATTERY_RATED_W
        );
        market.grantRole(market.SETTLER_ROLE(), SETTLER);
        for (uint256 i = 0; i < 3; ++i) {
            members[i] = vm.addr(keys[i]);
            cap.registerDevice(uint32(2 + i), 2, GridCapacity.Kind.Other, members[i], METER, -50_000, 50_000);
            market.registerProsumer(members[i], uint32(2 + i));
        }
        vm.stopPrank();
    }

    function _band(uint64 interval, int64 lo, int64 hi) internal {
        uint32[] memory ids = new uint32[](1);
        ids[0] = 1;
        int64[] memory los = new int64[](1);
        los[0] = lo;
        int64[] memory his = new int64[](1);
        his[0] = hi;
        vm.prank(ORACLE);
        cap.writeBands(interval, bytes32(0), ids, los, his);
    }

    function _order(uint256 who, uint64 interval, uint8 side, uint64 energyWh, uint64 price)
        internal
        view
        returns (GridMarket.Order memory)
    {
        return GridMarket.Order({
            prosumer: members[who],
            interval: interval,
            side: side,
            energyWh: energyWh,
            priceMicroEurPerKwh: price,
            nonce: market.nonceOf(members[who]),
            deadline: uint64(block.timestamp + 600)
        });
    }

    function _sign(uint256 who, GridMarket.Order memory o) internal view returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(keys[who], market.hashOrder(o));
        return abi.encodePacked(r, s, v);
    }

    /// Place a signed order (relayed by a stranger); returns its book entry.
    function _place(uint256 who, uint64 interval, uint8 side, uint64 energyWh, uint64 price)
        internal
        returns (GridMarket.BookOrder memory)
    {
        GridMarket.Order memory o = _order(who, interval, side, energyWh, price);
        bytes memory sig = _sign(who, o);
        vm.prank(STRANGER);
        market.submitOrderSigned(o, sig);
        return GridMarket.BookOrder(members[who], side, energyWh, price);
    }

    function _t(uint32 buy, uint32 sell, uint64 energyWh) internal pure returns (GridMarket.Trade memory) {
        return GridMarket.Trade(buy, sell, energyWh);
    }

    function _sumOfBalances() internal view returns (int256 sum) {
        sum = market.balanceOf(BATTERY);
        for (uint256 i = 0; i < 3; ++i) {
            sum += market.balanceOf(members[i]);
        }
    }
}

/// @notice Unit and fuzz tests of GridMarket: registry, roles, pause, orders, settlement bound to
/// the orders, deviations.
contract GridMarketTest is MarketFixture {
    uint64 internal constant I = I0 + 1; // the interval most tests trade in

    function setUp() public {
        _deploy();
    }

    /// The worked book of these tests: m0 buys 1000 Wh at <= 0.20, m1 sells 1500 Wh at >= 0.08
    /// (must sell), m2 buys 400 Wh at <= 0.30 (must buy).
    function _book() internal returns (GridMarket.BookOrder[] memory book) {
        book = new GridMarket.BookOrder[](3);
        book[0] = _place(0, I, 0, 1_000, 200_000);
        book[1] = _place(1, I, 1, 1_500, FEED_IN);
        book[2] = _place(2, I, 0, 400, RETAIL);
    }

    /// Valid trades on `_book()` at clearing 150,000 with battery power -1000 W (250 Wh sold).
    function _trades() internal pure returns (GridMarket.Trade[] memory t) {
        t = new GridMarket.Trade[](4);
        t[0] = _t(0, 1, 500); // m0 <- m1 at the clearing price
        t[1] = _t(2, BATT, 250); // m2 <- battery
        t[2] = _t(2, GRID, 100); // m2 <- grid at retail
        t[3] = _t(GRID, 1, 40); // grid <- m1 at feed-in
    }

    function _settle(GridMarket.BookOrder[] memory book, GridMarket.Trade[] memory t, uint64 clearing) internal {
        vm.prank(SETTLER);
        market.settle(I, clearing, -1_000, book, t);
    }

    // ---------------------------------------------------------------- deployment and registry

    function test_deploymentBoundsAndTariffsAreChecked() public {
        GridMarket.Tariffs memory ok = GridMarket.Tariffs(RETAIL, FEED_IN, IMBALANCE_BUY, IMBALANCE_SELL);
        IGridCapacity c = IGridCapacity(address(cap));
        vm.expectRevert(GridMarket.InvalidBounds.selector);
        new GridMarket(DSO, 0, c, 1, BATTERY, ok, GridMarket.OrderBounds(MAX_PRICE + 1, MAX_PRICE, 1));
        vm.expectRevert(GridMarket.InvalidBounds.selector);
        new GridMarket(DSO, 0, c, 1, BATTERY, ok, GridMarket.OrderBounds(MIN_PRICE, MAX_PRICE, 0));
        vm.expectRevert(GridMarket.InvalidBounds.selector); // (2^64-1)^2 nano-euro > 2^96
        new GridMarket(
            DSO, 0, c, 1, BATTERY, ok, GridMarket.OrderBounds(MIN_PRICE, type(uint64).max, type(uint64).max)
        );
        vm.expectRevert(GridMarket.InvalidPrices.selector);
        new GridMarket(
            DSO, 0, c, 1, BATTERY, GridMarket.Tariffs(RETAIL, FEED_IN, MAX_PRICE + 1, IMBALANCE_SELL),
            GridMarket.OrderBounds(MIN_PRICE, MAX_PRICE, MAX_ENERGY)
        );
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControlDefaultAdminRules.AccessControlInvalidDefaultAdmin.selector, address(0))
        );
        new GridMarket(address(0), 0, c, 1, BATTERY, ok, GridMarket.OrderBounds(MIN_PRICE, MAX_PRICE, 1));
        vm.expectRevert(GridMarket.InvalidPrices.selector);
        vm.prank(DSO);
        market.setTariffs(GridMarket.Tariffs(0, FEED_IN, IMBALANCE_BUY, IMBALANCE_SELL));
    }

    function test_registryBindsOneMeterDevicePerAccount() public {
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, STRANGER, market.COMMUNITY_ADMIN_ROLE()
            )
        );
        vm.prank(STRANGER);
        market.registerProsumer(STRANGER, 2);
        vm.startPrank(DSO);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.DeviceTaken.selector, uint32(2), members[0]));
        market.registerProsumer(STRANGER, 2);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.DeviceTaken.selector, uint32(1), BATTERY));
        market.registerProsumer(STRANGER, 1);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.UnknownDevice.selector, type(uint32).max));
        market.registerProsumer(STRANGER, type(uint32).max);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.ReservedAccount.selector, BATTERY));
        market.registerProsumer(BATTERY, 2);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.AlreadyProsumer.selector, members[0]));
        market.registerProsumer(members[0], 2);
        market.setBatteryShare(members[0], 6_000);
        market.setBatteryShare(members[1], 4_000);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.SharesExceeded.selector, uint256(10_001)));
        market.setBatteryShare(members[2], 1);
        market.removeProsumer(members[0]); // its share is released, its device stays bound
        vm.expectRevert(abi.encodeWithSelector(GridMarket.DeviceTaken.selector, uint32(2), members[0]));
        market.registerProsumer(STRANGER, 2);
        vm.stopPrank();
        assertEq(uint256(market.totalShareBps()), 4_000, "total after removal");
        assertTrue(!market.isProsumer(members[0]), "removed");
    }

    function testFuzz_sharesNeverExceedWholeBattery(uint16 a, uint16 b, uint16 c) public {
        uint16[3] memory want = [a, b, c];
        vm.startPrank(DSO);
        for (uint256 i = 0; i < 3; ++i) {
            uint256 total = uint256(market.totalShareBps()) - market.shareBpsOf(members[i]) + want[i];
            if (total > 10_000) {
                vm.expectRevert(abi.encodeWithSelector(GridMarket.SharesExceeded.selector, total));
            }
            market.setBatteryShare(members[i], want[i]);
        }
        vm.stopPrank();
        uint256 sum = uint256(market.shareBpsOf(members[0])) + market.shareBpsOf(members[1])
            + market.shareBpsOf(members[2]);
        assertEq(sum, market.totalShareBps(), "total tracks shares");
        assertTrue(sum <= 10_000, "shares <= 10000 bps");
    }

    // ---------------------------------------------------------------- admin rules, duties, pause

    function test_adminCannotRenounceOrHandOverInOneStep() public {
        bytes32 admin = market.DEFAULT_ADMIN_ROLE();
        vm.startPrank(DSO);
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControlDefaultAdminRules.AccessControlEnforcedDefaultAdminDelay.selector, 0)
        );
        market.renounceRole(admin, DSO);
        vm.expectRevert(IAccessControlDefaultAdminRules.AccessControlEnforcedDefaultAdminRules.selector);
        market.revokeRole(admin, DSO);
        vm.expectRevert(IAccessControlDefaultAdminRules.AccessControlEnforcedDefaultAdminRules.selector);
        market.grantRole(admin, STRANGER);
        vm.stopPrank();
        assertTrue(market.hasRole(admin, DSO), "still the admin");
    }

    function test_settlerHoldsNoOtherDuty() public {
        bytes32 settler = market.SETTLER_ROLE();
        bytes32 community = market.COMMUNITY_ADMIN_ROLE();
        bytes32 pauser = market.PAUSER_ROLE();
        vm.startPrank(DSO);
        vm.expectRevert(
            abi.encodeWithSelector(GridMarket.RoleConflict.selector, DSO, market.DEFAULT_ADMIN_ROLE(), settler)
        );
        market.grantRole(settler, DSO); // the DSO cannot make itself settler
        vm.expectRevert(
            abi.encodeWithSelector(GridMarket.RoleConflict.selector, ORACLE, market.CAPACITY_ORACLE_ROLE(), settler)
        );
        market.grantRole(settler, ORACLE); // nor the oracle that writes the meter totals
        vm.expectRevert(
            abi.encodeWithSelector(GridMarket.RoleConflict.selector, SETTLER, settler, community)
        );
        market.grantRole(community, SETTLER);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.RoleConflict.selector, SETTLER, settler, pauser));
        market.grantRole(pauser, SETTLER);
        market.beginDefaultAdminTransfer(SETTLER);
        vm.stopPrank();
        vm.warp(block.timestamp + ADMIN_DELAY + 1);
        vm.expectRevert(
            abi.encodeWithSelector(GridMarket.RoleConflict.selector, SETTLER, settler, market.DEFAULT_ADMIN_ROLE())
        );
        vm.prank(SETTLER);
        market.acceptDefaultAdminTransfer(); // nor take over the admin
    }

    function test_pauseStopsOrdersAndSettlementNotReads() public {
        address guardian = address(0x6A2D);
        bytes32 pauser = market.PAUSER_ROLE();
        vm.prank(DSO);
        market.grantRole(pauser, guardian);
        GridMarket.BookOrder[] memory book = _book();
        _band(I, -2_000, 2_000);
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, STRANGER, market.PAUSER_ROLE())
        );
        vm.prank(STRANGER);
        market.pause();
        vm.prank(guardian);
        market.pause();
        GridMarket.Order memory o = _order(0, I, 0, 10, 200_000);
        bytes memory sig = _sign(0, o);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        market.submitOrderSigned(o, sig);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        vm.prank(members[0]);
        market.submitOrder(o);
        vm.startPrank(SETTLER);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        market.commitOrders(I);
        vm.expectRevert(Pausable.EnforcedPause.selector);
        market.settle(I, 150_000, -1_000, book, _trades());
        vm.stopPrank();
        vm.expectRevert(Pausable.EnforcedPause.selector);
        market.settleDeviations(I0 - 1, new GridMarket.BookOrder[](0), new uint64[](0), "");
        // reads go on
        assertEq(uint256(market.nonceOf(members[0])), 1, "nonce readable");
        assertTrue(market.intervalState(I).bookHash != 0 && market.isOpen(I), "state readable");
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, guardian, market.DEFAULT_ADMIN_ROLE()
            )
        );
        vm.prank(guardian);
        market.unpause();
        vm.prank(DSO);
        market.unpause();
        _settle(book, _trades(), 150_000);
    }

    // ---------------------------------------------------------------- orders

    function test_signedOrderRelayedThenReplayed() public {
        GridMarket.Order memory o = _order(0, I, 1, 1_000, 120_000);
        bytes memory sig = _sign(0, o);
        vm.prank(STRANGER); // anyone relays
        bytes32 digest = market.submitOrderSigned(o, sig);
        assertEq(digest, market.hashOrder(o), "digest");
        assertEq(uint256(market.nonceOf(members[0])), 1, "nonce advanced");
        vm.expectRevert(abi.encodeWithSelector(GridMarket.BadNonce.selector, members[0], uint64(1), uint64(0)));
        market.submitOrderSigned(o, sig);
    }

    function test_badOrdersRevertWithTheirError() public {
        GridMarket.Order memory o = _order(0, I, 1, 1_000, 120_000);
        bytes memory sig = _sign(1, o); // signed by another member
        vm.expectRevert(GridMarket.BadSignature.selector);
        market.submitOrderSigned(o, sig);
        vm.expectRevert(GridMarket.BadSignature.selector);
        market.submitOrderSigned(o, hex"1234");
        _expectOrderRevert(0, I, 1, MAX_ENERGY + 1, 120_000,
            abi.encodeWithSelector(GridMarket.EnergyOutOfBounds.selector, MAX_ENERGY + 1, MAX_ENERGY));
        _expectOrderRevert(0, I, 1, type(uint64).max, 120_000,
            abi.encodeWithSelector(GridMarket.EnergyOutOfBounds.selector, type(uint64).max, MAX_ENERGY));
        _expectOrderRevert(0, I, 1, 0, 120_000, abi.encodeWithSelector(GridMarket.ZeroEnergy.selector));
        _expectOrderRevert(0, I, 1, 1, 0,
            abi.encodeWithSelector(GridMarket.PriceOutOfBounds.selector, uint64(0), MIN_PRICE, MAX_PRICE));
        _expectOrderRevert(0, I, 1, 1, type(uint64).max,
            abi.encodeWithSelector(GridMarket.PriceOutOfBounds.selector, type(uint64).max, MIN_PRICE, MAX_PRICE));
        _expectOrderRevert(0, I, 2, 1, 120_000, abi.encodeWithSelector(GridMarket.InvalidSide.selector, uint8(2)));
        _expectOrderRevert(0, I0 - 1, 1, 1, 120_000,
            abi.encodeWithSelector(GridMarket.IntervalInPast.selector, I0 - 1, I0));
        _expectOrderRevert(0, 0, 1, 1, 120_000, abi.encodeWithSelector(GridMarket.IntervalInPast.selector, 0, I0));
        _expectOrderRevert(0, I0 + AHEAD + 1, 1, 1, 120_000,
            abi.encodeWithSelector(GridMarket.IntervalTooFarAhead.selector, I0 + AHEAD + 1, I0 + AHEAD));
        _expectOrderRevert(0, type(uint64).max, 1, 1, 120_000,
            abi.encodeWithSelector(GridMarket.IntervalTooFarAhead.selector, type(uint64).max, I0 + AHEAD));
        o.deadline = uint64(block.timestamp - 1);
        sig = _sign(0, o);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.Expired.selector, o.deadline, block.timestamp));
        market.submitOrderSigned(o, sig);
        o = _order(0, I, 1, 1, 120_000);
        o.nonce = type(uint64).max;
        sig = _sign(0, o);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.BadNonce.selector, members[0], uint64(0), type(uint64).max));
        market.submitOrderSigned(o, sig);
        assertEq(uint256(market.nonceOf(members[0])), 0, "no nonce consumed by rejected orders");
        _place(0, I0, 1, MAX_ENERGY, MAX_PRICE); // the current interval and the bounds themselves pass
        _place(0, I0 + AHEAD, 0, 1, MIN_PRICE);
    }

    function _expectOrderRevert(uint256 who, uint64 interval, uint8 side, uint64 e, uint64 p, bytes memory err)
        internal
    {
        GridMarket.Order memory o = _order(who, interval, side, e, p);
        bytes memory sig = _sign(who, o);
        vm.expectRevert(err);
        market.submitOrderSigned(o, sig);
    }

    function test_batchPlacesGoodOrdersAndRejectsBadOnesWithTheirError() public {
        GridMarket.Order[] memory os = new GridMarket.Order[](7);
        bytes[] memory sigs = new bytes[](7);
        os[0] = _order(0, I, 1, 1_000, 120_000); // good
        sigs[0] = _sign(0, os[0]);
        os[1] = _order(1, I, 0, 500, 150_000); // signed by another member
        sigs[1] = _sign(0, os[1]);
        os[2] = _order(1, I, 0, 500, 150_000); // good: member 1's nonce is still 0
        sigs[2] = _sign(1, os[2]);
        os[3] = _order(0, I, 1, 1_000, 120_000); // replays nonce 0 of member 0
        sigs[3] = _sign(0, os[3]);
        os[4] = _order(2, I0 - 1, 1, 1, 120_000); // a past interval
        sigs[4] = _sign(2, os[4]);
        os[5] = _order(2, I, 1, 1, type(uint64).max); // price at the type's extreme
        sigs[5] = _sign(2, os[5]);
        os[6] = _order(2, I, 1, 2_000, 120_000); // good: member 2's rejected orders used no nonce
        sigs[6] = _sign(2, os[6]);
        bytes[7] memory reasons = [
            bytes(""),
            abi.encodeWithSelector(GridMarket.BadSignature.selector),
            bytes(""),
            abi.encodeWithSelector(GridMarket.BadNonce.selector, members[0], uint64(1), uint64(0)),
            abi.encodeWithSelector(GridMarket.IntervalInPast.selector, I0 - 1, I0),
            abi.encodeWithSelector(GridMarket.PriceOutOfBounds.selector, type(uint64).max, MIN_PRICE, MAX_PRICE),
            bytes("")
        ];
        uint256[3] memory alone = [uint256(1), 4, 5]; // refused alone too, with the same error
        for (uint256 k = 0; k < 3; ++k) {
            vm.expectRevert(reasons[alone[k]]);
            market.submitOrderSigned(os[alone[k]], sigs[alone[k]]);
        }
        vm.recordLogs();
        vm.prank(STRANGER); // anyone relays
        uint256 placed = market.submitOrdersSigned(os, sigs);
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertEq(placed, 3, "placed");
        assertEq(logs.length, 7, "one event per order");
        bytes32 placedTopic = keccak256("OrderPlaced(uint64,address,bytes32,uint8,uint64,uint64,uint64)");
        bytes32 rejectedTopic = keccak256("OrderRejected(address,bytes32,uint64,bytes)");
        for (uint256 i = 0; i < 7; ++i) {
            bytes32 digest = market.hashOrder(os[i]);
            if (reasons[i].length == 0) {
                assertEq(logs[i].topics[0], placedTopic, "placed in order");
                (bytes32 d,,,,) = abi.decode(logs[i].data, (bytes32, uint8, uint64, uint64, uint64));
                assertEq(d, digest, "placed digest");
            } else {
                assertEq(logs[i].topics[0], rejectedTopic, "rejected in order");
                assertEq(logs[i].topics[1], bytes32(uint256(uint160(os[i].prosumer))), "rejected prosumer");
                (bytes32 d, uint64 nonce, bytes memory reason) = abi.decode(logs[i].data, (bytes32, uint64, bytes));
                assertEq(d, digest, "rejected digest");
                assertEq(uint256(nonce), uint256(os[i].nonce), "rejected nonce");
                assertEq(reason, reasons[i], "the reason submitOrderSigned reverts with");
            }
        }
        assertEq(uint256(market.nonceOf(members[0])), 1, "member 0");
        assertEq(uint256(market.nonceOf(members[1])), 1, "member 1");
        assertEq(uint256(market.nonceOf(members[2])), 1, "member 2");
    }

    function test_malformedBatchesRevertWholeAndPausedTakesNone() public {
        GridMarket.Order[] memory none = new GridMarket.Order[](0);
        bytes[] memory noSigs = new bytes[](0);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.BadBatch.selector, 0, 0));
        market.submitOrdersSigned(none, noSigs);
        GridMarket.Order[] memory one = new GridMarket.Order[](1);
        one[0] = _order(0, I, 1, 1_000, 120_000);
        bytes[] memory two = new bytes[](2);
        two[0] = _sign(0, one[0]);
        two[1] = two[0];
        vm.expectRevert(abi.encodeWithSelector(GridMarket.BadBatch.selector, 1, 2));
        market.submitOrdersSigned(one, two);
        uint256 tooMany = market.MAX_ORDERS_PER_BATCH() + 1;
        GridMarket.Order[] memory big = new GridMarket.Order[](tooMany);
        bytes[] memory bigSigs = new bytes[](tooMany);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.BadBatch.selector, tooMany, tooMany));
        market.submitOrdersSigned(big, bigSigs);
        bytes[] memory sig = new bytes[](1);
        sig[0] = two[0];
        vm.prank(DSO);
        market.pause();
        vm.expectRevert(Pausable.EnforcedPause.selector);
        market.submitOrdersSigned(one, sig);
        vm.prank(DSO);
        market.unpause();
        assertEq(market.submitOrdersSigned(one, sig), 1, "placed after unpause");
        assertEq(uint256(market.nonceOf(members[0])), 1, "one nonce");
    }

    function test_fullBatchFitsABlock() public {
        uint256 n = market.MAX_ORDERS_PER_BATCH();
        GridMarket.Order[] memory os = new GridMarket.Order[](n);
        bytes[] memory sigs = new bytes[](n);
        for (uint256 i = 0; i < n; ++i) {
            os[i] = _order(i % 3, I, uint8(i % 2), 100, 120_000);
            os[i].nonce = uint64(i / 3);
            sigs[i] = _sign(i % 3, os[i]);
        }
        uint256 gasBefore = gasleft();
        assertEq(market.submitOrdersSigned(os, sigs), n, "all placed");
        assertTrue(gasBefore - gasleft() < 15_000_000, "a full batch in half a 30M block");
    }

    function test_ownOrderOnlyByTheProsumer() public {
        GridMarket.Order memory o = _order(1, I, 1, 1_000, 120_000);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.NotOrderOwner.selector, STRANGER, members[1]));
        vm.prank(STRANGER);
        market.submitOrder(o);
        vm.prank(members[1]);
        market.submitOrder(o);
        o.prosumer = STRANGER;
        vm.expectRevert(abi.encodeWithSelector(GridMarket.NotProsumer.selector, STRANGER));
        vm.prank(STRANGER);
        market.submitOrder(o);
    }

    function test_committedIntervalTakesNoOrders() public {
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, DSO, market.SETTLER_ROLE())
        );
        vm.prank(DSO);
        market.commitOrders(I);
        vm.prank(SETTLER);
        market.commitOrders(I);
        GridMarket.Order memory o = _order(0, I, 1, 1_000, 120_000);
        bytes memory sig = _sign(0, o);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.IntervalClosed.selector, I));
        market.submitOrderSigned(o, sig);
        vm.startPrank(SETTLER);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.AlreadyCommitted.selector, I));
        market.commitOrders(I);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.IntervalTooFarAhead.selector, type(uint64).max, I0 + AHEAD));
        market.commitOrders(type(uint64).max);
        vm.stopPrank();
    }

    // ---------------------------------------------------------------- settlement

    function test_settleBooksTradesBoundToTheOrders() public {
        GridMarket.BookOrder[] memory book = _book();
        _band(I, -2_000, 2_000);
        _settle(book, _trades(), 150_000);
        assertEq(market.balanceOf(members[0]), -int256(uint256(500 * 150_000)), "m0 bought locally");
        assertEq(market.balanceOf(members[1]), int256(uint256(500 * 150_000 + 40 * FEED_IN)), "m1 sold");
        assertEq(market.balanceOf(members[2]), -int256(uint256(250 * 150_000 + 100 * RETAIL)), "m2 bought");
        assertEq(market.balanceOf(BATTERY), int256(250 * 150_000), "battery sold");
        assertEq(market.gridExchangeNanoEur(), int256(uint256(40 * FEED_IN)) - int256(uint256(100 * RETAIL)), "grid");
        assertEq(_sumOfBalances(), market.gridExchangeNanoEur(), "sum of balances == grid exchange");
        GridMarket.IntervalState memory st = market.intervalState(I);
        assertTrue(st.settled && st.committed, "settled");
        assertEq(int256(st.batteryBoughtWh), -250, "battery bought");
        uint256[] memory fills = new uint256[](3);
        (fills[0], fills[1], fills[2]) = (500, 540, 350);
        assertEq(st.fillsHash, keccak256(abi.encodePacked(fills)), "fills hash");
        vm.expectRevert(abi.encodeWithSelector(GridMarket.AlreadySettled.selector, I));
        _settle(book, _trades(), 150_000);
    }

    function test_settlerCannotInventEnlargeOrRepriceATrade() public {
        GridMarket.BookOrder[] memory book = _book();
        _band(I, -2_000, 2_000);
        GridMarket.Trade[] memory t = _trades();
        // invent: an order index no placed order has, or a book with an order nobody placed
        t[0] = _t(0, 7, 500);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.UnknownOrder.selector, uint256(0), uint32(7)));
        _settle(book, t, 150_000);
        GridMarket.BookOrder[] memory forged = new GridMarket.BookOrder[](4);
        (forged[0], forged[1], forged[2]) = (book[0], book[1], book[2]);
        forged[3] = GridMarket.BookOrder(members[0], 0, type(uint64).max, MAX_PRICE);
        vm.expectRevert(
            abi.encodeWithSelector(GridMarket.BookMismatch.selector, market.intervalState(I).bookHash, _hash(forged))
        );
        _settle(forged, _trades(), 150_000);
        // enlarge: the order itself, one trade beyond it, or several that add up beyond it
        book[0].energyWh = 2_000;
        vm.expectRevert(
            abi.encodeWithSelector(GridMarket.BookMismatch.selector, market.intervalState(I).bookHash, _hash(book))
        );
        _settle(book, _trades(), 150_000);
        book[0].energyWh = 1_000;
        t = _trades();
        t[0] = _t(0, 1, 1_001);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.Overfilled.selector, uint32(0), uint256(1_001), uint64(1_000)));
        _settle(book, t, 150_000);
        t[0] = _t(0, 1, type(uint64).max);
        vm.expectRevert(
            abi.encodeWithSelector(GridMarket.Overfilled.selector, uint32(0), uint256(type(uint64).max), uint64(1_000))
        );
        _settle(book, t, 150_000);
        t[0] = _t(2, 1, 300); // m2: 300 + 250 (battery) + 100 (grid) = 650 > 400
        vm.expectRevert(abi.encodeWithSelector(GridMarket.Overfilled.selector, uint32(2), uint256(550), uint64(400)));
        _settle(book, t, 150_000);
        // re-price: a clearing price beyond a limit, a grid trade beyond a limit
        vm.expectRevert(
            abi.encodeWithSelector(GridMarket.LimitViolated.selector, uint32(0), uint64(200_000), uint64(250_000))
        );
        _settle(book, _trades(), 250_000);
        t = _trades();
        t[2] = _t(0, GRID, 100); // m0 would pay retail 0.30 > its limit 0.20
        vm.expectRevert(
            abi.encodeWithSelector(GridMarket.LimitViolated.selector, uint32(0), uint64(200_000), RETAIL)
        );
        _settle(book, t, 150_000);
        vm.expectRevert(
            abi.encodeWithSelector(GridMarket.PriceOutOfBounds.selector, MAX_PRICE + 1, MIN_PRICE, MAX_PRICE)
        );
        _settle(book, _trades(), MAX_PRICE + 1);
    }

    function _hash(GridMarket.BookOrder[] memory book) internal pure returns (bytes32 h) {
        for (uint256 i = 0; i < book.length; ++i) {
            h = keccak256(abi.encode(h, book[i].prosumer, book[i].side, book[i].energyWh, book[i].priceMicroEurPerKwh));
        }
    }

    function test_tradePartiesMustFitTheirOrders() public {
        GridMarket.BookOrder[] memory book = _book();
        _band(I, -2_000, 2_000);
        GridMarket.Trade[] memory t = _trades();
        t[0] = _t(1, 0, 500); // a sell order as buyer
        vm.expectRevert(abi.encodeWithSelector(GridMarket.WrongSide.selector, uint32(1)));
        _settle(book, t, 150_000);
        t[0] = _t(GRID, GRID, 500);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.SelfTrade.selector, uint256(0)));
        _settle(book, t, 150_000);
        t[0] = _t(BATT, BATT, 500);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.SelfTrade.selector, uint256(0)));
        _settle(book, t, 150_000);
        t[0] = _t(0, 1, 0);
        vm.expectRevert(GridMarket.ZeroEnergy.selector);
        _settle(book, t, 150_000);
        vm.prank(DSO);
        market.removeProsumer(members[1]);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.UnknownParty.selector, members[1]));
        _settle(book, _trades(), 150_000);
    }

    function test_selfTradeOfOneMembersOrders() public {
        GridMarket.BookOrder[] memory book = new GridMarket.BookOrder[](2);
        book[0] = _place(0, I, 0, 100, 200_000);
        book[1] = _place(0, I, 1, 100, 100_000);
        _band(I, -2_000, 2_000);
        GridMarket.Trade[] memory t = new GridMarket.Trade[](1);
        t[0] = _t(0, 1, 100);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.SelfTrade.selector, uint256(0)));
        vm.prank(SETTLER);
        market.settle(I, 150_000, 0, book, t);
    }

    function test_batteryAndWindowChecks() public {
        GridMarket.BookOrder[] memory book = _book();
        GridMarket.Trade[] memory t = _trades();
        vm.expectRevert(abi.encodeWithSelector(GridCapacity.NoBand.selector, uint32(1), I));
        _settle(book, t, 150_000);
        _band(I, 0, 2_000);
        vm.expectRevert(
            abi.encodeWithSelector(GridMarket.BatteryOutsideBand.selector, int64(-1_000), int64(0), int64(2_000))
        );
        _settle(book, t, 150_000);
        _band(I + 1, -2_000, 2_000);
        vm.startPrank(SETTLER);
        // the book of I + 1 is empty; its trades must then only use the battery and the grid
        GridMarket.Trade[] memory bg = new GridMarket.Trade[](1);
        bg[0] = _t(BATT, GRID, 252); // 252 Wh bought for +1000 W x 900 s = 250 Wh: 2 Wh off
        vm.expectRevert(
            abi.encodeWithSelector(GridMarket.EnergyImbalance.selector, int256(-252), int64(1_000), INTERVAL_S)
        );
        market.settle(I + 1, 150_000, 1_000, new GridMarket.BookOrder[](0), bg);
        bg[0] = _t(BATT, GRID, 251); // within 1 Wh
        market.settle(I + 1, 150_000, 1_000, new GridMarket.BookOrder[](0), bg);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.IntervalTooFarAhead.selector, type(uint64).max, I0 + AHEAD));
        market.settle(type(uint64).max, 150_000, 0, new GridMarket.BookOrder[](0), new GridMarket.Trade[](0));
        vm.stopPrank();
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, DSO, market.SETTLER_ROLE())
        );
        vm.prank(DSO);
        market.settle(I, 150_000, 0, book, t);
        assertEq(market.balanceOf(BATTERY), -int256(uint256(251 * RETAIL)), "battery bought from the grid");
    }

    // ---------------------------------------------------------------- deviations

    function _totals(int64 battery, int64 m0, int64 m1, int64 m2) internal pure returns (bytes memory) {
        return abi.encodePacked(uint32(1), battery, uint32(2), m0, uint32(3), m1, uint32(4), m2);
    }

    function _fills(uint64 a, uint64 b, uint64 c) internal pure returns (uint64[] memory f) {
        f = new uint64[](3);
        (f[0], f[1], f[2]) = (a, b, c);
    }

    function test_deviationsSettleMeteredAgainstTraded() public {
        GridMarket.BookOrder[] memory book = _book();
        _band(I, -2_000, 2_000);
        _settle(book, _trades(), 150_000);
        int256 gridBefore = market.gridExchangeNanoEur();
        // m0 bought 500 and used 800; m1 sold 540 and injected 600; m2 and the battery as traded
        bytes memory totals = _totals(-250, 800, -600, 350);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.IntervalNotOver.selector, I, I0));
        market.settleDeviations(I, book, _fills(500, 540, 350), totals);
        vm.warp(uint256(I + 1) * INTERVAL_S);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.NoMeterTotals.selector, I));
        market.settleDeviations(I, book, _fills(500, 540, 350), totals);
        vm.prank(ORACLE);
        cap.writeMeterTotals(I, totals);
        bytes memory lie = _totals(-250, 500, -600, 350);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.TotalsMismatch.selector, keccak256(totals), keccak256(lie)));
        market.settleDeviations(I, book, _fills(500, 540, 350), lie);
        uint64[] memory f = _fills(500, 540, 350);
        vm.expectRevert(
            abi.encodeWithSelector(
                GridMarket.FillsMismatch.selector, market.intervalState(I).fillsHash,
                keccak256(abi.encodePacked(_fills(800, 540, 350)))
            )
        );
        market.settleDeviations(I, book, _fills(800, 540, 350), totals);
        vm.prank(STRANGER); // anyone: every input is checked
        market.settleDeviations(I, book, f, totals);
        assertEq(market.balanceOf(members[0]), -int256(uint256(500 * 150_000 + 300 * IMBALANCE_BUY)), "m0 pays");
        assertEq(
            market.balanceOf(members[1]),
            int256(uint256(500 * 150_000 + 40 * FEED_IN + 60 * IMBALANCE_SELL)),
            "m1 is paid for 60 Wh more"
        );
        assertEq(
            market.gridExchangeNanoEur(),
            gridBefore - int256(uint256(300 * IMBALANCE_BUY)) + int256(uint256(60 * IMBALANCE_SELL)),
            "grid exchange"
        );
        assertEq(_sumOfBalances(), market.gridExchangeNanoEur(), "sum of balances == grid exchange");
        vm.expectRevert(abi.encodeWithSelector(GridMarket.DeviationsAlreadySettled.selector, I));
        market.settleDeviations(I, book, f, totals);
    }

    function test_traderWithoutMeterTotalBlocksOnlyItsInterval() public {
        GridMarket.BookOrder[] memory book = _book();
        _band(I, -2_000, 2_000);
        _settle(book, _trades(), 150_000);
        vm.warp(uint256(I + 1) * INTERVAL_S);
        bytes memory totals = abi.encodePacked(uint32(1), int64(-250), uint32(2), int64(500), uint32(4), int64(350));
        vm.prank(ORACLE);
        cap.writeMeterTotals(I, totals);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.NoMeterTotal.selector, members[1], uint32(3)));
        market.settleDeviations(I, book, _fills(500, 540, 350), totals);
    }

    function test_unsettledIntervalSettlesAllMeteredEnergyAndCloses() public {
        GridMarket.BookOrder[] memory book = _book(); // placed, never settled
        vm.warp(uint256(I + 1) * INTERVAL_S);
        bytes memory totals = _totals(0, 800, -600, 0);
        vm.prank(ORACLE);
        cap.writeMeterTotals(I, totals);
        vm.expectRevert(abi.encodeWithSelector(GridMarket.BookMismatch.selector, bytes32(0), _hash(book)));
        market.settleDeviations(I, book, new uint64[](0), totals);
        market.settleDeviations(I, new GridMarket.BookOrder[](0), new uint64[](0), totals);
        assertEq(market.balanceOf(members[0]), -int256(uint256(800 * IMBALANCE_BUY)), "m0 all imbalance");
        assertEq(market.balanceOf(members[1]), int256(uint256(600 * IMBALANCE_SELL)), "m1 all imbalance");
        assertEq(_sumOfBalances(), market.gridExchangeNanoEur(), "sum of balances == grid exchange");
        vm.expectRevert(abi.encodeWithSelector(GridMarket.DeviationsAlreadySettled.selector, I));
        vm.prank(SETTLER);
        market.settle(I, 150_000, 0, book, new GridMarket.Trade[](0));
    }

    /// Random valid settlements and deviations: balances change in sum exactly by the grid
    /// exchange, and an order is never filled beyond its energy.
    function testFuzz_balancesChangeOnlyByGridExchange(uint256 seed, uint8 countSeed, uint64 clearingSeed) public {
        uint64 clearing = uint64(bound(clearingSeed, MIN_PRICE, MAX_PRICE));
        GridMarket.BookOrder[] memory book = new GridMarket.BookOrder[](6);
        for (uint256 k = 0; k < 6; ++k) {
            uint8 side = uint8(k % 2);
            book[k] = _place(k % 3, I, side, uint64(bound(seed >> (k * 8), 1, 5_000)), side == 0 ? MAX_PRICE : MIN_PRICE);
        }
        uint256 n = bound(countSeed, 1, 12);
        GridMarket.Trade[] memory t = new GridMarket.Trade[](n);
        uint256[] memory left = new uint256[](6);
        for (uint256 k = 0; k < 6; ++k) {
            left[k] = book[k].energyWh;
        }
        uint256 used = 0;
        for (uint256 i = 0; i < n; ++i) {
            uint256 r = uint256(keccak256(abi.encode(seed, i)));
            uint32 buy = uint32(2 * (r % 3)); // buy orders 0, 2, 4
            uint32 sell = uint32(2 * ((r >> 8) % 3) + 1); // sell orders 1, 3, 5
            if (r % 7 == 0) buy = GRID;
            if (book[buy == GRID ? 0 : buy].prosumer == book[sell].prosumer) sell = sell == 5 ? 1 : sell + 2;
            uint64 e = uint64(bound(r >> 64, 1, 200));
            if ((buy != GRID && left[buy] < e) || left[sell] < e) {
                (buy, sell) = (GRID, BATT);
                e = 0;
            }
            if (buy != GRID) left[buy] -= e;
            if (sell != BATT) left[sell] -= e;
            t[i] = _t(buy, sell, e == 0 ? 1 : e);
            if (sell == BATT) used += 1;
        }
        _band(I, -BATTERY_RATED_W, BATTERY_RATED_W);
        vm.prank(SETTLER);
        market.settle(I, clearing, -int64(int256(used) * 4), book, t); // 4 W x 900 s = 1 Wh sold
        assertEq(_sumOfBalances(), market.gridExchangeNanoEur(), "sum of balances == grid exchange");
        vm.warp(uint256(I + 1) * INTERVAL_S);
        bytes memory totals = _totals(int64(int256(seed % 1000)) - 500, 1, -2, int64(int256(seed % 77)));
        vm.prank(ORACLE);
        cap.writeMeterTotals(I, totals);
        uint64[] memory fills = new uint64[](6);
        for (uint256 k = 0; k < 6; ++k) {
            fills[k] = uint64(book[k].energyWh - left[k]);
        }
        market.settleDeviations(I, book, fills, totals);
        assertEq(_sumOfBalances(), market.gridExchangeNanoEur(), "after deviations too");
    }
}
