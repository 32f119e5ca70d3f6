// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";

/// @notice The part of GridCapacity the market reads.
interface IGridCapacityBands {
    /// @notice The band of a device in an interval (reverts NoBand if none).
    function bandOf(uint32 deviceId, uint64 interval)
        external
        view
        returns (int64 pMinW, int64 pMaxW, uint64 updatedAt);

    /// @notice Interval length in seconds.
    function intervalSeconds() external view returns (uint64);
}

/// @title GridMarket: prosumer registry, EIP-712 orders, order commitments and settlement
/// @notice Units (see docs/interfaces.md): energy Wh (uint64), power W (int64, battery charging
/// positive), price micro-euro per kWh (= nano-euro per Wh, uint64), money nano-euro (int256;
/// 1 euro-cent = 1e7 nano-euro). A payment is exactly energyWh * priceMicroEurPerKwh nano-euro.
/// @dev Roles: DEFAULT_ADMIN_ROLE = the DSO (tariffs, price bounds, role admin);
/// COMMUNITY_ADMIN_ROLE registers prosumers and battery shares (the DSO holds it too);
/// SETTLER_ROLE (the matcher / oracle) commits order roots and settles intervals.
contract GridMarket is AccessControl, EIP712 {
    /// @notice Role that registers prosumers and sets battery shares.
    bytes32 public constant COMMUNITY_ADMIN_ROLE = keccak256("COMMUNITY_ADMIN_ROLE");
    /// @notice Role of the matcher that commits order roots and settles intervals.
    bytes32 public constant SETTLER_ROLE = keccak256("SETTLER_ROLE");
    /// @notice EIP-712 type hash of `Order`.
    bytes32 public constant ORDER_TYPEHASH = keccak256(
        "Order(address prosumer,uint64 interval,uint8 side,uint64 energyWh,uint64 priceMicroEurPerKwh,uint64 nonce,uint64 deadline)"
    );
    /// @notice Basis points of a whole battery.
    uint16 public constant BPS = 10_000;

    /// @notice A buy (side 0) or sell (side 1) order for one interval.
    struct Order {
        address prosumer;
        uint64 interval;
        uint8 side;
        uint64 energyWh;
        uint64 priceMicroEurPerKwh;
        uint64 nonce;
        uint64 deadline;
    }

    /// @notice A settled trade; address(0) is the grid.
    struct Trade {
        address buyer;
        address seller;
        uint64 energyWh;
        uint64 priceMicroEurPerKwh;
    }

    /// @notice What is stored per interval.
    struct IntervalState {
        bytes32 ordersRoot;
        bool committed;
        bool settled;
        uint64 clearingPriceMicroEurPerKwh;
        int64 batteryPowerW;
        uint32 tradeCount;
    }

    /// @notice The capacity contract holding the battery's bands.
    IGridCapacityBands public immutable capacity;
    /// @notice Interval length in s, read from the capacity contract at deployment.
    uint64 public immutable intervalSeconds;
    /// @notice Capacity-contract device id of the community battery.
    uint32 public immutable batteryDeviceId;
    /// @notice Account under which the community battery trades.
    address public immutable batteryAccount;

    /// @notice Grid -> member price, micro-euro per kWh.
    uint64 public retailTariffMicroEurPerKwh;
    /// @notice Member -> grid price, micro-euro per kWh.
    uint64 public feedInTariffMicroEurPerKwh;
    /// @notice Lowest order / clearing price, micro-euro per kWh.
    uint64 public minPriceMicroEurPerKwh;
    /// @notice Highest order / clearing price, micro-euro per kWh.
    uint64 public maxPriceMicroEurPerKwh;
    /// @notice Sum of all battery shares in basis points (<= 10000).
    uint16 public totalShareBps;
    /// @notice Net money the grid paid the community: feed-in payments minus retail charges,
    /// nano-euro. Invariant: the sum of all balances equals this.
    int256 public gridExchangeNanoEur;

    /// @notice Whether an account is a registered prosumer.
    mapping(address account => bool) public isProsumer;
    /// @notice The next order nonce a prosumer must use.
    mapping(address account => uint64) public nonceOf;
    /// @notice A member's battery share in basis points.
    mapping(address account => uint16) public shareBpsOf;
    /// @notice Balance in nano-euro (positive = the community owes the member).
    mapping(address account => int256) public balanceOf;
    mapping(uint64 interval => IntervalState) private _intervals;

    /// @notice A prosumer joined.
    event ProsumerRegistered(address indexed prosumer);
    /// @notice A prosumer left (its battery share is dropped).
    event ProsumerRemoved(address indexed prosumer);
    /// @notice A member's battery share changed.
    event BatteryShareSet(address indexed member, uint16 shareBps, uint16 totalShareBps);
    /// @notice Tariffs changed.
    event TariffsSet(uint64 retailTariffMicroEurPerKwh, uint64 feedInTariffMicroEurPerKwh);
    /// @notice Price bounds changed.
    event PriceBoundsSet(uint64 minPriceMicroEurPerKwh, uint64 maxPriceMicroEurPerKwh);
    /// @notice An order was accepted; `digest` is its EIP-712 hash (a Merkle leaf).
    event OrderPlaced(
        uint64 indexed interval,
        address indexed prosumer,
        bytes32 digest,
        uint8 side,
        uint64 energyWh,
        uint64 priceMicroEurPerKwh,
        uint64 nonce
    );
    /// @notice The Merkle root of an interval's orders was committed; the interval takes no more orders.
    event OrdersCommitted(uint64 indexed interval, bytes32 ordersRoot);
    /// @notice One trade of a settlement.
    event TradeSettled(
        uint64 indexed interval,
        address indexed buyer,
        address indexed seller,
        uint64 energyWh,
        uint64 priceMicroEurPerKwh
    );
    /// @notice An interval was settled.
    event IntervalSettled(
        uint64 indexed interval,
        bytes32 ordersRoot,
        uint64 clearingPriceMicroEurPerKwh,
        int64 batteryPowerW,
        uint32 tradeCount
    );

    /// @notice The account is not a registered prosumer.
    error NotProsumer(address account);
    /// @notice The account is already a registered prosumer.
    error AlreadyProsumer(address account);
    /// @notice The order's nonce is not the next expected one.
    error BadNonce(address prosumer, uint64 expected, uint64 got);
    /// @notice The order's deadline has passed.
    error Expired(uint64 deadline, uint256 nowSeconds);
    /// @notice The signature is malformed or not the prosumer's.
    error BadSignature();
    /// @notice The sender of `submitOrder` is not the order's prosumer.
    error NotOrderOwner(address sender, address prosumer);
    /// @notice Zero energy in an order or trade.
    error ZeroEnergy();
    /// @notice Side other than 0 (buy) or 1 (sell).
    error InvalidSide(uint8 side);
    /// @notice A price outside [minPrice, maxPrice].
    error PriceOutOfBounds(uint64 price, uint64 minPrice, uint64 maxPrice);
    /// @notice The interval is committed or settled and takes no orders.
    error IntervalClosed(uint64 interval);
    /// @notice The interval's order root is already committed.
    error AlreadyCommitted(uint64 interval);
    /// @notice The settlement's order root differs from the committed one.
    error RootMismatch(bytes32 committed, bytes32 given);
    /// @notice The interval is already settled.
    error AlreadySettled(uint64 interval);
    /// @notice The battery power lies outside the battery's band.
    error BatteryOutsideBand(int64 batteryPowerW, int64 pMinW, int64 pMaxW);
    /// @notice The battery's traded energy does not match its power (tolerance 1 Wh).
    error EnergyImbalance(int256 batteryNetSoldWh, int64 batteryPowerW, uint64 intervalSeconds);
    /// @notice A trade's price is not the clearing price (member trades) or the tariff (grid trades).
    error PriceMismatch(uint256 tradeIndex, uint64 expected, uint64 got);
    /// @notice A trade party that is neither a prosumer, the battery nor the grid.
    error UnknownParty(address account);
    /// @notice A trade whose buyer equals its seller (the grid with itself included).
    error SelfTrade(uint256 tradeIndex);
    /// @notice Battery shares would exceed 10000 basis points.
    error SharesExceeded(uint256 totalShareBps);
    /// @notice Bounds with min > max, or tariffs outside the price bounds.
    error InvalidPrices();
    /// @notice The zero address where an account is required.
    error ZeroAddress();
    /// @notice The battery account cannot be registered as a prosumer.
    error ReservedAccount(address account);

    /// @notice Deploy the market.
    /// @param admin the DSO (DEFAULT_ADMIN_ROLE and COMMUNITY_ADMIN_ROLE)
    /// @param capacity_ the GridCapacity contract
    /// @param batteryDeviceId_ capacity device id of the community battery
    /// @param batteryAccount_ account the battery trades under
    /// @param retailTariff grid -> member price, micro-euro per kWh
    /// @param feedInTariff member -> grid price, micro-euro per kWh
    /// @param minPrice lowest order price, micro-euro per kWh
    /// @param maxPrice highest order price, micro-euro per kWh
    constructor(
        address admin,
        IGridCapacityBands capacity_,
        uint32 batteryDeviceId_,
        address batteryAccount_,
        uint64 retailTariff,
        uint64 feedInTariff,
        uint64 minPrice,
        uint64 maxPrice
    ) EIP712("gridshare-market", "1") {
        if (admin == address(0) || address(capacity_) == address(0) || batteryAccount_ == address(0)) {
            revert ZeroAddress();
        }
        capacity = capacity_;
        intervalSeconds = capacity_.intervalSeconds();
        batteryDeviceId = batteryDeviceId_;
        batteryAccount = batteryAccount_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(COMMUNITY_ADMIN_ROLE, admin);
        _setPrices(retailTariff, feedInTariff, minPrice, maxPrice);
    }

    // ------------------------------------------------------------------ registry

    /// @notice Register a prosumer.
    /// @param prosumer the prosumer's account
    function registerProsumer(address prosumer) external onlyRole(COMMUNITY_ADMIN_ROLE) {
        if (prosumer == address(0)) revert ZeroAddress();
        if (prosumer == batteryAccount) revert ReservedAccount(prosumer);
        if (isProsumer[prosumer]) revert AlreadyProsumer(prosumer);
        isProsumer[prosumer] = true;
        emit ProsumerRegistered(prosumer);
    }

    /// @notice Remove a prosumer; its balance stays, its battery share is released.
    /// @param prosumer a registered prosumer
    function removeProsumer(address prosumer) external onlyRole(COMMUNITY_ADMIN_ROLE) {
        if (!isProsumer[prosumer]) revert NotProsumer(prosumer);
        isProsumer[prosumer] = false;
        uint16 share = shareBpsOf[prosumer];
        if (share != 0) {
            shareBpsOf[prosumer] = 0;
            totalShareBps -= share;
            emit BatteryShareSet(prosumer, 0, totalShareBps);
        }
        emit ProsumerRemoved(prosumer);
    }

    /// @notice Set a member's share of the community battery; all shares sum to <= 10000 bps.
    /// @param member a registered prosumer
    /// @param shareBps basis points
    function setBatteryShare(address member, uint16 shareBps) external onlyRole(COMMUNITY_ADMIN_ROLE) {
        if (!isProsumer[member]) revert NotProsumer(member);
        uint256 total = uint256(totalShareBps) - shareBpsOf[member] + shareBps;
        if (total > BPS) revert SharesExceeded(total);
        shareBpsOf[member] = shareBps;
        totalShareBps = uint16(total);
        emit BatteryShareSet(member, shareBps, uint16(total));
    }

    /// @notice Set tariffs and price bounds (tariffs must lie inside the bounds).
    /// @param retailTariff grid -> member price, micro-euro per kWh
    /// @param feedInTariff member -> grid price, micro-euro per kWh
    /// @param minPrice lowest order price, micro-euro per kWh
    /// @param maxPrice highest order price, micro-euro per kWh
    function setPrices(uint64 retailTariff, uint64 feedInTariff, uint64 minPrice, uint64 maxPrice)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        _setPrices(retailTariff, feedInTariff, minPrice, maxPrice);
    }

    // ------------------------------------------------------------------ orders

    /// @notice Place an order relayed by anyone, authorised by the prosumer's EIP-712 signature.
    /// @param order the order
    /// @param signature 65-byte (r, s, v) ECDSA signature of `hashOrder(order)`
    /// @return digest the order's EIP-712 digest
    function submitOrderSigned(Order calldata order, bytes calldata signature)
        external
        returns (bytes32 digest)
    {
        digest = hashOrder(order);
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, signature);
        if (err != ECDSA.RecoverError.NoError || signer != order.prosumer) revert BadSignature();
        _placeOrder(order, digest);
    }

    /// @notice Place an order sent by the prosumer itself (msg.sender == order.prosumer).
    /// @param order the order
    /// @return digest the order's EIP-712 digest
    function submitOrder(Order calldata order) external returns (bytes32 digest) {
        if (msg.sender != order.prosumer) revert NotOrderOwner(msg.sender, order.prosumer);
        digest = hashOrder(order);
        _placeOrder(order, digest);
    }

    /// @notice The EIP-712 digest of an order (the 32 bytes that are signed; a Merkle leaf).
    /// @param order the order
    /// @return the digest
    function hashOrder(Order calldata order) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(
                    ORDER_TYPEHASH,
                    order.prosumer,
                    order.interval,
                    order.side,
                    order.energyWh,
                    order.priceMicroEurPerKwh,
                    order.nonce,
                    order.deadline
                )
            )
        );
    }

    /// @notice The EIP-712 domain separator (name gridshare-market, version 1).
    /// @return the separator
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    // ------------------------------------------------------------------ commitment and settlement

    /// @notice Commit the Merkle root of an interval's orders (docs/interfaces.md); closes the
    /// interval to new orders.
    /// @param interval the interval id
    /// @param ordersRoot the root (zero for no orders)
    function commitOrders(uint64 interval, bytes32 ordersRoot) external onlyRole(SETTLER_ROLE) {
        IntervalState storage st = _intervals[interval];
        if (st.settled) revert AlreadySettled(interval);
        if (st.committed) revert AlreadyCommitted(interval);
        st.ordersRoot = ordersRoot;
        st.committed = true;
        emit OrdersCommitted(interval, ordersRoot);
    }

    /// @notice Settle an interval: check the trades and book them on the balances.
    /// @dev Checks: not settled before; `ordersRoot` equals the committed root (committed here if
    /// none was); clearing price inside the bounds; `batteryPowerW` inside the battery's band of
    /// the interval; per trade: energy > 0, parties are prosumers, the battery or the grid
    /// (address(0)), buyer != seller, price = clearing price between members, = retail tariff
    /// when the grid sells, = feed-in tariff when the grid buys; the battery's net sold energy
    /// equals -batteryPowerW * intervalSeconds / 3600 Wh within 1 Wh.
    /// @param interval the interval id
    /// @param ordersRoot Merkle root of the interval's orders
    /// @param clearingPriceMicroEurPerKwh the uniform clearing price
    /// @param batteryPowerW community battery power in W (charging positive)
    /// @param trades the trades (emitted, not stored)
    function settle(
        uint64 interval,
        bytes32 ordersRoot,
        uint64 clearingPriceMicroEurPerKwh,
        int64 batteryPowerW,
        Trade[] calldata trades
    ) external onlyRole(SETTLER_ROLE) {
        IntervalState storage st = _intervals[interval];
        if (st.settled) revert AlreadySettled(interval);
        if (st.committed && st.ordersRoot != ordersRoot) revert RootMismatch(st.ordersRoot, ordersRoot);
        uint64 minPrice = minPriceMicroEurPerKwh;
        uint64 maxPrice = maxPriceMicroEurPerKwh;
        if (clearingPriceMicroEurPerKwh < minPrice || clearingPriceMicroEurPerKwh > maxPrice) {
            revert PriceOutOfBounds(clearingPriceMicroEurPerKwh, minPrice, maxPrice);
        }
        (int64 pMinW, int64 pMaxW,) = capacity.bandOf(batteryDeviceId, interval);
        if (batteryPowerW < pMinW || batteryPowerW > pMaxW) {
            revert BatteryOutsideBand(batteryPowerW, pMinW, pMaxW);
        }

        int256 batteryNetSoldWh = _bookTrades(interval, clearingPriceMicroEurPerKwh, trades);

        // net sold + power * seconds / 3600 == 0 within 1 Wh, in exact integers (Wh * 3600 = W * s)
        int256 mismatch = batteryNetSoldWh * 3600 + int256(batteryPowerW) * int256(uint256(intervalSeconds));
        if (mismatch > 3600 || mismatch < -3600) {
            revert EnergyImbalance(batteryNetSoldWh, batteryPowerW, intervalSeconds);
        }

        if (!st.committed) {
            st.ordersRoot = ordersRoot;
            st.committed = true;
        }
        st.settled = true;
        st.clearingPriceMicroEurPerKwh = clearingPriceMicroEurPerKwh;
        st.batteryPowerW = batteryPowerW;
        st.tradeCount = uint32(trades.length);
        emit IntervalSettled(interval, ordersRoot, clearingPriceMicroEurPerKwh, batteryPowerW, uint32(trades.length));
    }

    // ------------------------------------------------------------------ views

    /// @notice The stored state of an interval.
    /// @param interval the interval id
    /// @return the interval's commitment and settlement summary
    function intervalState(uint64 interval) external view returns (IntervalState memory) {
        return _intervals[interval];
    }

    /// @notice Whether an interval still takes orders (neither committed nor settled).
    /// @param interval the interval id
    /// @return true if open
    function isOpen(uint64 interval) public view returns (bool) {
        IntervalState storage st = _intervals[interval];
        return !st.committed && !st.settled;
    }

    // ------------------------------------------------------------------ internals

    function _placeOrder(Order calldata order, bytes32 digest) private {
        address prosumer = order.prosumer;
        if (!isProsumer[prosumer]) revert NotProsumer(prosumer);
        uint64 expected = nonceOf[prosumer];
        if (order.nonce != expected) revert BadNonce(prosumer, expected, order.nonce);
        if (block.timestamp > order.deadline) revert Expired(order.deadline, block.timestamp);
        if (order.side > 1) revert InvalidSide(order.side);
        if (order.energyWh == 0) revert ZeroEnergy();
        uint64 price = order.priceMicroEurPerKwh;
        if (price < minPriceMicroEurPerKwh || price > maxPriceMicroEurPerKwh) {
            revert PriceOutOfBounds(price, minPriceMicroEurPerKwh, maxPriceMicroEurPerKwh);
        }
        if (!isOpen(order.interval)) revert IntervalClosed(order.interval);
        nonceOf[prosumer] = expected + 1;
        emit OrderPlaced(order.interval, prosumer, digest, order.side, order.energyWh, price, expected);
    }

    function _bookTrades(uint64 interval, uint64 clearingPrice, Trade[] calldata trades)
        private
        returns (int256 batteryNetSoldWh)
    {
        int256 gridNet = 0;
        for (uint256 i = 0; i < trades.length; ++i) {
            (int256 batteryWh, int256 gridNanoEur) = _bookTrade(interval, i, trades[i], clearingPrice);
            batteryNetSoldWh += batteryWh;
            gridNet += gridNanoEur;
        }
        if (gridNet != 0) gridExchangeNanoEur += gridNet;
    }

    /// Book one trade; returns the battery's sold energy (Wh, bought negative) and the grid's
    /// payment to the community (nano-euro, retail charges negative).
    function _bookTrade(uint64 interval, uint256 i, Trade calldata t, uint64 clearingPrice)
        private
        returns (int256 batterySoldWh, int256 gridPaidNanoEur)
    {
        address buyer = t.buyer;
        address seller = t.seller;
        uint64 energyWh = t.energyWh;
        uint64 price = t.priceMicroEurPerKwh;
        if (energyWh == 0) revert ZeroEnergy();
        if (buyer == seller) revert SelfTrade(i);
        uint64 expected = seller == address(0)
            ? retailTariffMicroEurPerKwh
            : (buyer == address(0) ? feedInTariffMicroEurPerKwh : clearingPrice);
        if (price != expected) revert PriceMismatch(i, expected, price);
        int256 amount = int256(uint256(energyWh) * uint256(price));
        if (buyer == address(0)) {
            gridPaidNanoEur = amount;
        } else {
            _checkParty(buyer);
            balanceOf[buyer] -= amount;
            if (buyer == batteryAccount) batterySoldWh = -int256(uint256(energyWh));
        }
        if (seller == address(0)) {
            gridPaidNanoEur = -amount;
        } else {
            _checkParty(seller);
            balanceOf[seller] += amount;
            if (seller == batteryAccount) batterySoldWh = int256(uint256(energyWh));
        }
        emit TradeSettled(interval, buyer, seller, energyWh, price);
    }

    function _checkParty(address account) private view {
        if (account != batteryAccount && !isProsumer[account]) revert UnknownParty(account);
    }

    function _setPrices(uint64 retailTariff, uint64 feedInTariff, uint64 minPrice, uint64 maxPrice) private {
        if (
            minPrice > maxPrice || retailTariff < minPrice || retailTariff > maxPrice || feedInTariff < minPrice
                || feedInTariff > maxPrice
        ) revert InvalidPrices();
        retailTariffMicroEurPerKwh = retailTariff;
        feedInTariffMicroEurPerKwh = feedInTariff;
        minPriceMicroEurPerKwh = minPrice;
        maxPriceMicroEurPerKwh = maxPrice;
        emit TariffsSet(retailTariff, feedInTariff);
        emit PriceBoundsSet(minPrice, maxPrice);
    }
}
